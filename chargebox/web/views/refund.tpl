% rebase('layout')
<section class="card" id="refund">
  <h1>{{!fill(_('Refund sale #{sale}'), sale=ident(sale['id']))}}</h1>
  <p>{{!fill(_('Sale to {phone} by {seller} (seller #{id}) on {when}: {amount}.'), phone=wrap('span', digits(sale['phone']), ' dir="ltr" class="phone"'), seller=wrap('bdi', seller['name']), id=ident(seller['id']), when=at(sale['created_at']), amount=toman(sale['amount']))}}</p>
  % if sale['refunded_at']:
  <p class="error" role="alert" id="already-refunded">
    {{!fill(_('{refunded} by ledger entry #{entry}. A sale is refunded once only.'), refunded=wrap('span', fill(_('refunded {when}'), when=at(sale['refunded_at'])), ' class="status refunded"'), entry=ident(sale['refund_entry_id']))}}</p>
  % else:
  <p class="hint">{{!fill(_("Refunding gives the whole {amount} back to the seller's balance, once, with your reason kept in its ledger for good. It cannot be undone."), amount=toman(sale['amount']))}}</p>
  <form method="post" action="/admin/sales/{{sale['id']}}/refund" id="refund-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <input type="hidden" name="idempotency_key" value="{{form_key}}">
    % include('field', state=refund, form_id='refund', name='reason', label=_('Reason'), maxlength=500, placeholder=_('operator did not deliver'), hint=_('Kept in the ledger for good; the seller sees it.'))
    <button type="submit" id="refund-button">{{!fill(_('Refund {amount}'), amount=toman(sale['amount']))}}</button>
  </form>
  % end
  <p><a href="/admin/sellers/{{seller['id']}}" id="refund-cancel">{{_('Back to the seller')}}</a></p>
</section>
