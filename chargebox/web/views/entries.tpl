% if entries:
<div class="scroll">
<table class="list stack" id="ledger">
  <thead><tr><th>#</th><th>When</th><th>What</th><th class="num">Amount</th><th class="num">Balance after</th></tr></thead>
  <tbody>
  % for entry in entries:
    <tr class="{{entry['kind']}}">
      <td class="id">{{entry['id']}}</td>
      <td class="when">{{when(entry['created_at'])}}</td>
      <td class="what">
      % if entry['kind'] == 'sale':
        Sale to <span dir="ltr">{{entry['phone']}}</span>
        % if entry['refunded_at']:
        <span class="status refunded" id="refunded-{{entry['sale_id']}}">refunded {{when(entry['refunded_at'])}}</span>
        % elif get('refundable'):
        <a href="/admin/sales/{{entry['sale_id']}}/refund" id="refund-{{entry['sale_id']}}">Refund…</a>
        % end
      % elif entry['kind'] == 'refund':
        Refund of sale #{{entry['refund_of']}} to <span dir="ltr">{{entry['phone']}}</span>: <bdi>{{entry['reason']}}</bdi>
      % elif entry['kind'] == 'credit':
        Credit request #{{entry['credit_request_id']}}
      % else:
        Adjustment: <bdi>{{entry['reason']}}</bdi>
      % end
      </td>
      <td class="num amount">{{signed(entry['amount'])}}</td>
      <td class="num after"><span class="narrow-only">balance </span>{{f"{entry['balance_after']:,}"}}</td>
    </tr>
  % end
  </tbody>
</table>
</div>
% else:
<p class="empty">No entries yet.</p>
% end
