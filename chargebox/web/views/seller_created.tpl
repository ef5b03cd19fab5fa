% rebase('layout')
<section class="card narrow">
  <h1>Seller <bdi>{{seller['name']}}</bdi> created</h1>
  <p>Seller #<span id="new-seller-id">{{seller['id']}}</span>. Its API key is below. Copy it now and
     give it to the seller: <strong>it is shown only this once</strong> and cannot be recovered.</p>
  <p class="secret"><code id="api-key" dir="ltr">{{api_key}}</code></p>
  <p><a href="/admin/sellers/{{seller['id']}}">Open the seller</a> · <a href="/admin">Back to requests &amp; sellers</a></p>
</section>
