% rebase('layout')
<section class="card summary">
  <h1><bdi>{{seller['name']}}</bdi> <span class="muted">{{_('#{id}').format(id=ident(seller['id']))}}</span></h1>
  <p class="label">{{_('Balance')}}</p>
  <p class="balance" id="balance">{{toman(seller['balance'])}}</p>
  <p class="muted">{{!fill(_('Seller since {when}'), when=at(seller['created_at']))}} ·
     <span class="status {{seller['status']}}" id="seller-status">{{status(seller['status'])}}</span></p>
</section>

<section class="card" id="access">
  <h2>{{_('Access')}}</h2>
  % if problem:
  <p class="error" role="alert" id="access-problem">{{problem}}</p>
  % end
  % suspended = seller['status'] == 'suspended'
  <form method="post" action="/admin/sellers/{{seller['id']}}/{{'reactivate' if suspended else 'suspend'}}" id="status-form">
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <p class="hint">{{_('Suspended: its keys and web sessions are refused; its books are unchanged.') if suspended else _('A suspended seller can neither sell nor ask for credit; no money moves.')}}</p>
    <button type="submit" id="status-button">{{_('Reactivate') if suspended else _('Suspend')}}</button>
  </form>
  <div class="scroll">
  <table class="list keys" id="keys">
    <thead><tr><th>{{_('Key')}}</th><th>{{_('Made (Tehran time)')}}</th><th>{{_('Last used')}}</th><th><span class="sr-only">{{_('Change')}}</span></th></tr></thead>
    <tbody>
    % for key in keys:
      <tr id="key-{{key['id']}}"><td class="label"><bdi>{{_('default') if key['label'] == 'default' else key['label']}}</bdi></td>
          <td class="made"><span class="narrow-only">{{_('Made')}} </span><span class="when">{{when(key['created_at'])}}</span></td>
          <td class="used"><span class="narrow-only">{{_('Last used')}} </span><span class="when">{{when(key['last_used_at']) if key['last_used_at'] else _('never')}}</span></td>
          <td class="actions">
          % if key['revoked_at']:
            <span class="status rejected">{{!fill(_('revoked {when}'), when=at(key['revoked_at']))}}</span>
          % else:
            % for change, label in (('rotate', _('Rotate')), ('revoke', _('Revoke'))):
            <form method="post" action="/admin/sellers/{{seller['id']}}/keys/{{key['id']}}/{{change}}" class="inline">
              <input type="hidden" name="csrf" value="{{visitor.csrf}}">
              <button type="submit" id="{{change}}-{{key['id']}}">{{label}}</button>
            </form>
            % end
          % end
          </td></tr>
    % end
    </tbody>
  </table>
  </div>
  <form method="post" action="/admin/sellers/{{seller['id']}}/keys" id="key-form">
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    % include('field', state=key_form, form_id='key', name='label', label=_('New key for'), maxlength=100, placeholder=_('web shop, POS...'), hint=_('One key per integration; its secret is shown once.'))
    <button type="submit" id="key-button">{{_('Make a key')}}</button>
  </form>
</section>

<div class="columns">
<section class="card">
  <h2>{{_('Adjust the balance')}}</h2>
  <form method="post" action="/admin/sellers/{{seller['id']}}/adjustments" id="adjust-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <input type="hidden" name="idempotency_key" value="{{form_key}}">
    % include('field', state=adjust, form_id='adjust', name='amount', label=_('Amount (toman, − to take away)'), inputmode='text', direction='ltr', maxlength=40, placeholder=_('{minus} or {plus}').format(minus='\u2066-' + num(50000) + '\u2069', plus='\u2066' + num(50000) + '\u2069'))
    % include('field', state=adjust, form_id='adjust', name='reason', label=_('Reason'), maxlength=500, hint=_('Kept in the ledger for good.'))
    <button type="submit" id="adjust-button">{{_('Adjust')}}</button>
  </form>
</section>

<section class="card">
  <h2>{{_('Credit requests')}}</h2>
  % if requests:
  % include('requests', requests=requests)
  % else:
  <p class="empty">{{_('No credit requests yet.')}}</p>
  % end
</section>
</div>

% include('statement_form', action='/admin/sellers/{}/statement'.format(seller['id']), state=statement)

<section class="card">
  <h2>{{_('Latest ledger entries')}}</h2>
  % include('entries', entries=entries)
</section>
