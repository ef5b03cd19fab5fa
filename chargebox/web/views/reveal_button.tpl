%# A "Show" toggle for the password field `target`: app.js shows it and switches the field
%# between hidden and visible text (aria-pressed says which); without a script it stays hidden.
<button type="button" class="small reveal" id="reveal-{{target}}" data-reveal="{{target}}" aria-controls="{{target}}" aria-pressed="false" hidden>{{_('Show')}}</button>
