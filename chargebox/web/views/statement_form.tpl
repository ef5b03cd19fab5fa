<section class="card" id="statements">
  <h2>Statements</h2>
  <p class="hint">Opening balance, every entry, closing balance and totals, as a CSV file; days and months in Tehran time.</p>
  % for name, label, kind, hint in (('day', 'A day', 'date', '2026-12-01'), ('month', 'A month', 'month', '2026-12'), ('jmonth', 'A Jalali month', 'text', '1405-09')):
  <form method="get" action="{{action}}" class="period" id="statement-{{name}}">
    <input type="hidden" name="format" value="csv">
    <label for="statement-{{name}}-value">{{label}}</label>
    <input id="statement-{{name}}-value" name="{{name}}" type="{{kind}}" dir="ltr" required maxlength="10" placeholder="{{hint}}" autocomplete="off">
    <button type="submit" id="statement-{{name}}-button">Download</button>
  </form>
  % end
</section>
