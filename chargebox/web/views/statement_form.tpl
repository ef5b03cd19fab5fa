<section class="card" id="statements">
  <h2>{{_('Statements')}}</h2>
  <p class="hint">{{!fill(_('Opening balance, every entry, closing balance and totals, as a {csv} file; days and months in Tehran time.'), csv=wrap('span', 'CSV', ' translate="no" lang="en"'))}}</p>
  % if lang == 'fa':
  %   # A Persian clerk counts in Jalali days and months, typed (a browser's date widget is Gregorian).
  %   periods = (('jday', _('A Jalali day'), 'text', language.today()), ('jmonth', _('A Jalali month'), 'text', language.today()[:7]))
  % else:
  %   periods = (('day', _('A day'), 'date', '2026-12-01'), ('month', _('A month'), 'month', '2026-12'), ('jmonth', _('A Jalali month'), 'text', '1405-09'))
  % end
  % for name, label, kind, hint in periods:
  <form method="get" action="{{action}}" class="period" id="statement-{{name}}">
    <input type="hidden" name="format" value="csv">
    <label for="statement-{{name}}-value">{{label}}</label>
    <input id="statement-{{name}}-value" name="{{name}}" type="{{kind}}" dir="ltr" required maxlength="10" placeholder="{{digits(hint)}}" autocomplete="off">
    <button type="submit" id="statement-{{name}}-button">{{_('Download')}}</button>
  </form>
  % end
</section>
