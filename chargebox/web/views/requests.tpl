<div class="scroll">
<table class="list asked" id="credit-requests">
  % if get('caption'):
  <caption>{{caption}}</caption>
  % end
  <thead><tr><th>#</th><th class="num">{{_('Amount (toman)')}}</th><th>{{_('Status')}}</th><th>{{_('Asked (Tehran time)')}}</th></tr></thead>
  <tbody>
  % for request in requests:
    <tr><td class="id">{{ident(request['id'])}}</td><td class="num">{{num(request['amount'])}}</td>
        <td class="state"><span class="status {{request['status']}}">{{status(request['status'])}}</span></td><td class="when">{{when(request['created_at'])}}</td></tr>
  % end
  </tbody>
</table>
</div>
