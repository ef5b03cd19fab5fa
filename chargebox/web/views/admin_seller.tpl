% rebase('layout')
<section class="card summary">
  <h1><bdi>{{seller['name']}}</bdi> <span class="muted">#{{seller['id']}}</span></h1>
  <p class="label">Balance</p>
  <p class="balance" id="balance">{{toman(seller['balance'])}}</p>
  <p class="muted">Seller since {{when(seller['created_at'])}}</p>
</section>

<div class="columns">
<section class="card">
  <h2>Adjust the balance</h2>
  <form method="post" action="/admin/sellers/{{seller['id']}}/adjustments" id="adjust-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <input type="hidden" name="idempotency_key" value="{{form_key}}">
    % include('field', state=adjust, form_id='adjust', name='amount', label='Amount (toman, − to take away)', inputmode='text', direction='ltr', maxlength=40, placeholder='-50,000 or 50,000')
    % include('field', state=adjust, form_id='adjust', name='reason', label='Reason', maxlength=500, hint='Kept in the ledger for good.')
    <button type="submit" id="adjust-button">Adjust</button>
  </form>
</section>

<section class="card">
  <h2>Credit requests</h2>
  % if requests:
  <table class="list" id="credit-requests">
    <thead><tr><th>#</th><th class="num">Amount</th><th>Status</th><th>Asked</th></tr></thead>
    <tbody>
    % for request in requests:
      <tr><td>{{request['id']}}</td><td class="num">{{f"{request['amount']:,}"}}</td>
          <td><span class="status {{request['status']}}">{{request['status']}}</span></td><td>{{when(request['created_at'])}}</td></tr>
    % end
    </tbody>
  </table>
  % else:
  <p class="empty">No credit requests yet.</p>
  % end
</section>
</div>

<section class="card">
  <h2>Latest ledger entries</h2>
  % include('entries', entries=entries)
</section>
