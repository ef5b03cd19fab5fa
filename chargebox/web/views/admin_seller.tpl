% rebase('layout')
<section class="card summary">
  <h1><bdi>{{seller['name']}}</bdi> <span class="muted">#{{seller['id']}}</span></h1>
  <p class="label">Balance</p>
  <p class="balance" id="balance">{{toman(seller['balance'])}}</p>
  <p class="muted">Seller since {{when(seller['created_at'])}} ·
     <span class="status {{seller['status']}}" id="seller-status">{{seller['status']}}</span></p>
</section>

<section class="card" id="access">
  <h2>Access</h2>
  % if problem:
  <p class="error" role="alert" id="access-problem">{{problem}}</p>
  % end
  % suspended = seller['status'] == 'suspended'
  <form method="post" action="/admin/sellers/{{seller['id']}}/{{'reactivate' if suspended else 'suspend'}}" id="status-form">
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <p class="hint">{{'Suspended: its keys and web sessions are refused; its books are unchanged.' if suspended else 'A suspended seller can neither sell nor ask for credit; no money moves.'}}</p>
    <button type="submit" id="status-button">{{'Reactivate' if suspended else 'Suspend'}}</button>
  </form>
  <table class="list" id="keys">
    <thead><tr><th>Key</th><th>Made</th><th>Last used</th><th></th></tr></thead>
    <tbody>
    % for key in keys:
      <tr id="key-{{key['id']}}"><td><bdi>{{key['label']}}</bdi></td><td>{{when(key['created_at'])}}</td>
          <td>{{when(key['last_used_at']) if key['last_used_at'] else 'never'}}</td>
          <td>
          % if key['revoked_at']:
            <span class="status rejected">revoked {{when(key['revoked_at'])}}</span>
          % else:
            % for change in ('rotate', 'revoke'):
            <form method="post" action="/admin/sellers/{{seller['id']}}/keys/{{key['id']}}/{{change}}" class="inline">
              <input type="hidden" name="csrf" value="{{visitor.csrf}}">
              <button type="submit" id="{{change}}-{{key['id']}}">{{change.capitalize()}}</button>
            </form>
            % end
          % end
          </td></tr>
    % end
    </tbody>
  </table>
  <form method="post" action="/admin/sellers/{{seller['id']}}/keys" id="key-form">
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    % include('field', state=key_form, form_id='key', name='label', label='New key for', maxlength=100, placeholder='web shop, POS...', hint='One key per integration; its secret is shown once.')
    <button type="submit" id="key-button">Make a key</button>
  </form>
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

% include('statement_form', action='/admin/sellers/{}/statement'.format(seller['id']))

<section class="card">
  <h2>Latest ledger entries</h2>
  % include('entries', entries=entries)
</section>
