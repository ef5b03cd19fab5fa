% rebase('layout')
<section class="card">
  <h1>{{_('Charts')}}</h1>
  <p class="muted" id="charts-total">{{_('Sales in the last 30 days (Tehran time): {amount} in {sales}.').format(amount=toman(total[0]), sales=ngettext('{n} sale', '{n} sales', total[1]))}}</p>
</section>
% for figure in figures:
<section class="card" id="chart-{{figure['ident']}}">
  <h2>{{figure['title']}}</h2>
  {{!figure['svg']}}
  % if figure['ident'] != 'balance':
  <p class="muted" id="chart-{{figure['ident']}}-gross">{{_('Gross: refunded sales are still counted.')}}</p>
  % end
</section>
% end
