% if entries:
<div class="scroll">
<table class="list stack" id="ledger">
  <thead><tr><th>#</th><th>{{_('When (Tehran time)')}}</th><th>{{_('What')}}</th><th class="num">{{_('Amount (toman)')}}</th><th class="num">{{_('Balance after')}}</th></tr></thead>
  <tbody>
  % for entry in entries:
    <tr class="{{entry['kind']}}">
      <td class="id">{{ident(entry['id'])}}</td>
      <td class="when">{{when(entry['created_at'])}}</td>
      <td class="what">
      % phone = wrap('span', digits(entry['phone'] or ''), ' dir="ltr" class="phone"')
      % if entry['kind'] == 'sale':
        {{!fill(_('Sale #{sale} to {phone}'), sale=ident(entry['sale_id']), phone=phone)}}
        % if entry['refunded_at']:
        <span class="status refunded" id="refunded-{{entry['sale_id']}}">{{!fill(_('refunded {when}'), when=at(entry['refunded_at']))}}</span>
        % elif get('refundable'):
        <a href="/admin/sales/{{entry['sale_id']}}/refund" id="refund-{{entry['sale_id']}}">{{_('Refund…')}}</a>
        % end
      % elif entry['kind'] == 'refund':
        {{!fill(_('Refund of sale #{sale} to {phone}: {reason}'), sale=ident(entry['refund_of']), phone=phone, reason=wrap('bdi', entry['reason']))}}
      % elif entry['kind'] == 'credit':
        {{!fill(_('Credit request #{request}'), request=ident(entry['credit_request_id']))}}
      % else:
        {{!fill(_('Adjustment: {reason}'), reason=wrap('bdi', entry['reason']))}}
      % end
      </td>
      <td class="num amount">{{signed(entry['amount'])}}</td>
      <td class="num after"><span class="narrow-only">{{_('balance')}} </span>{{num(entry['balance_after'])}}</td>
    </tr>
  % end
  </tbody>
</table>
</div>
% else:
<p class="empty">{{_('No entries yet.')}}</p>
% end
