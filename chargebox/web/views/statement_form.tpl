<section class="card" id="statements">
  <h2>{{_('Statements')}}</h2>
  <p class="hint">{{!fill(_('Opening balance, every entry, closing balance and totals, as a {csv} file; days and months in Tehran time.'), csv=wrap('span', 'CSV', ' translate="no" lang="en"'))}}</p>
  % offered = {'jday': (_('A Jalali day'), 'text', language.today() if lang == 'fa' else '1405-09-10'), 'day': (_('A day'), 'date', '2026-12-01'), 'month': (_('A month'), 'month', '2026-12')}
  % offered['jmonth'] = (_('A Jalali month'), 'text', language.today()[:7] if lang == 'fa' else '1405-09')
  %   # A Persian clerk counts in Jalali days and months, typed (a browser's date widget is Gregorian);
  %   # a period refused that this language's page does not offer (an English page's link) is shown too,
  %   # and a refused one as text: a date or month widget would drop a value it cannot read.
  % shown = ['jday', 'jmonth'] if lang == 'fa' else ['day', 'month', 'jmonth']
  % shown += [name for name in offered if name not in shown and state.error(name)]
  % for name in shown:
  %   label, kind, hint = offered[name]
  % error = state.error(name)
  <form method="get" action="{{action}}" class="period{{' invalid' if error else ''}}" id="statement-{{name}}">
    <input type="hidden" name="format" value="csv">
    <label for="statement-{{name}}-value">{{label}}</label>
    <input id="statement-{{name}}-value" name="{{name}}" type="{{'text' if error else kind}}" dir="ltr" required maxlength="10" placeholder="{{digits(hint)}}" autocomplete="off"
           % if error:
           value="{{state.value(name)}}" aria-invalid="true" aria-describedby="statement-{{name}}-error" autofocus
           % end
           >
    <button type="submit" id="statement-{{name}}-button">{{_('Download')}}</button>
    % if error:
    <p class="error" id="statement-{{name}}-error" role="alert">{{error}}</p>
    % end
  </form>
  % end
</section>
