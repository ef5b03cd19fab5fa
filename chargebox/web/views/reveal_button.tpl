%# A "Show" toggle for the password field `target`: app.js shows it and switches the field
%# between hidden and visible text, and its label between data-show and data-hide (the
%# label says what a press does, so no aria-pressed); without a script it stays hidden.
<button type="button" class="small reveal" id="reveal-{{target}}" data-reveal="{{target}}" aria-controls="{{target}}" data-show="{{_('Show')}}" data-hide="{{_('Hide')}}" hidden>{{_('Show')}}</button>
