% rebase('layout')
<section class="card narrow">
  % once = wrap('strong', _('it is shown only this once'))
  % if get('key'):
  <h1>{{!fill(_('New key for {seller}'), seller=wrap('bdi', seller['name']))}}</h1>
  <p>{{!fill(_('Key {key} of seller #{id}. Copy it now and give it to the seller: {once} and cannot be recovered.'), key=wrap('bdi', key['label']), id=wrap('span', ident(seller['id']), ' id="new-seller-id"'), once=once)}}</p>
  % else:
  <h1>{{!fill(_('Seller {seller} created'), seller=wrap('bdi', seller['name']))}}</h1>
  <p>{{!fill(_('Seller #{id}. Its API key is below. Copy it now and give it to the seller: {once} and cannot be recovered.'), id=wrap('span', ident(seller['id']), ' id="new-seller-id"'), once=once)}}</p>
  % end
  <p class="secret"><code id="api-key" dir="ltr" translate="no">{{api_key}}</code></p>
  % include('copy_button', target='api-key')
  <p><a href="/admin/sellers/{{seller['id']}}">{{_('Open the seller')}}</a> · <a href="/admin">{{_('Back to requests & sellers')}}</a></p>
</section>
