% rebase('layout')
<section class="card" aria-labelledby="find-title">
  <h1 id="find-title">Find a sale</h1>
  <form method="get" action="/seller/sales/found" id="find-form">
    % include('field', state=search, form_id='find', name='phone', label='Phone number', inputmode='tel', direction='ltr', maxlength=64, required=False, placeholder='0912 123 4567', hint='Any spelling; Persian digits are fine.')
    % include('field', state=search, form_id='find', name='idempotency_key', label='Order id (your Idempotency-Key)', direction='ltr', maxlength=255, required=False)
    % include('field', state=search, form_id='find', name='from', label='From (Tehran time)', kind='datetime-local', direction='ltr', maxlength=40, required=False)
    % include('field', state=search, form_id='find', name='to', label='Before (Tehran time)', kind='datetime-local', direction='ltr', maxlength=40, required=False)
    <button type="submit" id="find-button">Find</button>
  </form>
</section>
% if sales is not None:
<section class="card">
  <h2>Sales found</h2>
  % if sales:
  <table class="list" id="sales-found">
    <thead><tr><th>#</th><th>When</th><th>Phone</th><th class="num">Amount</th><th class="num">Balance after</th><th>Refund</th></tr></thead>
    <tbody>
    % for sale in sales:
      <tr><td>{{sale['id']}}</td><td>{{when(sale['created_at'])}}</td><td dir="ltr">{{sale['phone']}}</td>
          <td class="num">{{f"{sale['amount']:,}"}}</td><td class="num">{{f"{sale['balance_after']:,}"}}</td>
          <td>
          % if sale['refunded_at']:
            <span class="status refunded" id="found-refunded-{{sale['id']}}">refunded {{when(sale['refunded_at'])}}</span>
          % end
          </td></tr>
    % end
    </tbody>
  </table>
  % if more:
  <p class="hint">The first {{len(sales)}} are shown: narrow the search to see the others.</p>
  % end
  % else:
  <p class="empty">No sale matches.</p>
  % end
</section>
% end
