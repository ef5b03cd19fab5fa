% rebase('layout')
<section class="card narrow">
  % if get('key'):
  <h1>New key for <bdi>{{seller['name']}}</bdi></h1>
  <p>Key <bdi>{{key['label']}}</bdi> of seller #<span id="new-seller-id">{{seller['id']}}</span>. Copy it now and
     give it to the seller: <strong>it is shown only this once</strong> and cannot be recovered.</p>
  % else:
  <h1>Seller <bdi>{{seller['name']}}</bdi> created</h1>
  <p>Seller #<span id="new-seller-id">{{seller['id']}}</span>. Its API key is below. Copy it now and
     give it to the seller: <strong>it is shown only this once</strong> and cannot be recovered.</p>
  % end
  <p class="secret"><code id="api-key" dir="ltr">{{api_key}}</code></p>
  % include('copy_button', target='api-key')
  <p><a href="/admin/sellers/{{seller['id']}}">Open the seller</a> · <a href="/admin">Back to requests &amp; sellers</a></p>
</section>
