% rebase('layout')
<section class="card" id="refund">
  <h1>Refund sale #{{sale['id']}}</h1>
  <p>Sale to <span dir="ltr">{{sale['phone']}}</span> by <bdi>{{seller['name']}}</bdi>
     (seller #{{seller['id']}}) on {{when(sale['created_at'])}}: {{toman(sale['amount'])}}.</p>
  % if sale['refunded_at']:
  <p class="error" role="alert" id="already-refunded">
    <span class="status refunded">refunded {{when(sale['refunded_at'])}}</span>
    by ledger entry #{{sale['refund_entry_id']}}. A sale is refunded once only.</p>
  % else:
  <p class="hint">Refunding gives the whole {{toman(sale['amount'])}} back to the seller's
     balance, once, with your reason kept in its ledger for good. It cannot be undone.</p>
  <form method="post" action="/admin/sales/{{sale['id']}}/refund" id="refund-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <input type="hidden" name="idempotency_key" value="{{form_key}}">
    % include('field', state=refund, form_id='refund', name='reason', label='Reason', maxlength=500, placeholder='operator did not deliver', hint='Kept in the ledger for good; the seller sees it.')
    <button type="submit" id="refund-button">Refund {{toman(sale['amount'])}}</button>
  </form>
  % end
  <p><a href="/admin/sellers/{{seller['id']}}" id="refund-cancel">Back to the seller</a></p>
</section>
