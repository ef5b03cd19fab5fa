% rebase('layout')
<section class="card summary">
  <h1><bdi>{{seller['name']}}</bdi></h1>
  <p class="label">Balance</p>
  <p class="balance" id="balance">{{toman(seller['balance'])}}</p>
</section>

<div class="columns">
<section class="card" aria-labelledby="sell-title">
  <h2 id="sell-title">Sell a charge</h2>
  <form method="post" action="/seller/sales" id="sale-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <input type="hidden" name="idempotency_key" id="sale-form-key" value="{{sale_key}}">
    % include('field', state=sale, form_id='sale', name='phone', label='Phone number', inputmode='tel', direction='ltr', maxlength=64, placeholder='0912 123 4567', hint='Iranian mobile; Persian digits are fine.')
    % include('field', state=sale, form_id='sale', name='amount', label='Amount (toman)', inputmode='numeric', direction='ltr', maxlength=40, placeholder='50,000')
    <button type="submit" id="sell-button">Sell</button>
  </form>
</section>

<section class="card" aria-labelledby="credit-title">
  <h2 id="credit-title">Request credit</h2>
  <form method="post" action="/seller/credit-requests" id="credit-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <input type="hidden" name="idempotency_key" id="credit-form-key" value="{{credit_key}}">
    % include('field', state=credit, form_id='credit', name='amount', label='Amount (toman)', inputmode='numeric', direction='ltr', maxlength=40, placeholder='1,000,000', hint='The admin approves or rejects it.')
    <button type="submit" id="credit-button">Request credit</button>
  </form>
  % if requests:
  <table class="list" id="credit-requests">
    <caption>Your latest credit requests</caption>
    <thead><tr><th>#</th><th class="num">Amount</th><th>Status</th><th>Asked</th></tr></thead>
    <tbody>
    % for request in requests:
      <tr><td>{{request['id']}}</td><td class="num">{{f"{request['amount']:,}"}}</td>
          <td><span class="status {{request['status']}}">{{request['status']}}</span></td><td>{{when(request['created_at'])}}</td></tr>
    % end
    </tbody>
  </table>
  % end
</section>
</div>

% include('statement_form', action='/seller/statement')

<section class="card">
  <h2>Latest ledger entries</h2>
  <p><a href="/seller/sales/found" id="find-link">Find a sale</a> by phone, order id or time.</p>
  % include('entries', entries=entries)
</section>
