% if entries:
<div class="scroll">
<table class="list" id="ledger">
  <thead><tr><th>#</th><th>When</th><th>What</th><th class="num">Amount</th><th class="num">Balance after</th></tr></thead>
  <tbody>
  % for entry in entries:
    <tr class="{{entry['kind']}}">
      <td>{{entry['id']}}</td>
      <td>{{when(entry['created_at'])}}</td>
      <td>
      % if entry['kind'] == 'sale':
        Sale to <span dir="ltr">{{entry['phone']}}</span>
      % elif entry['kind'] == 'credit':
        Credit request #{{entry['credit_request_id']}}
      % else:
        Adjustment: <bdi>{{entry['reason']}}</bdi>
      % end
      </td>
      <td class="num">{{signed(entry['amount'])}}</td>
      <td class="num">{{f"{entry['balance_after']:,}"}}</td>
    </tr>
  % end
  </tbody>
</table>
</div>
% else:
<p class="empty">No entries yet.</p>
% end
