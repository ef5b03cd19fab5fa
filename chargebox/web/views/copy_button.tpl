%# A "Copy" button for the text of element `target`; app.js shows it (without a script it
%# stays hidden and the text is copied by hand) and says in the status line what it did.
<button type="button" class="small" id="copy-{{target}}" data-copy="{{target}}" data-copied="{{_('Copied')}}" data-selected="{{_('Selected: now copy it with Ctrl+C, or with Copy on a phone.')}}" hidden>{{_('Copy')}}</button>
<span class="copy-status" id="copy-{{target}}-status" role="status"></span>
