% rebase('layout')
% bad = [s for s in result['sellers'] if not s['consistent']]
% scope, totals = result['scope'], result['totals']
% WHAT = {'I1': _('A balance is never negative (I1).'), 'I2': _("A seller's balance equals the sum of its ledger entries (I2)."), 'I3': _("Each entry's balance after is the one before plus its amount (I3)."), 'I4': _('An approved request has one credit entry; a sale one debit (I4).'), 'I5': _('Ledger entries are never changed or deleted (I5).'), 'guards': _("The database's guards (its triggers and constraints) are as the schema made them (I5)."), 'phones': _("A number's total charged is the sum of its sales, less refunds."), 'seal': _("A seller's sealed chain matches the ledger key."), 'anchor': _('The sealed chain matches its saved anchor.')}
<section class="card">
  <h1>{{_('Audit')}}</h1>
  % if result['consistent']:
  <p class="verdict good" id="verdict">{{_('✓ The books are consistent')}}</p>
  % else:
  <p class="verdict bad" id="verdict">{{ngettext('✗ The books are NOT consistent: {n} problem', '✗ The books are NOT consistent: {n} problems', result['problem_count'])}}</p>
  % end
  <p>{{_("Every balance was checked against the sum of its ledger entries, every entry against the one before it (invariants I1–I5), and each seller's sealed chain against the ledger key.")}}</p>
  <p id="scope">
  % if scope['full']:
    {{ngettext('This audit verified every ledger entry now ({n} entry).', 'This audit verified every ledger entry now ({n} entries).', scope['entries_verified'])}}
    % if scope.get('distrusted'):
     <span id="distrusted">{{!fill(_('It trusted no checkpoint: a full audit found a problem on {when} (checkpoint #{checkpoint}), and until an audit is clean every audit reads every row.'), when=at(scope['distrusted']['found_at']), checkpoint=ident(scope['distrusted']['id']))}}</span>
    % end
  % else:
    % checkpoint = scope['checkpoint']
    % by = _('a full audit') if checkpoint['full_at'] == checkpoint['verified_at'] else fill(_('audits continuing the full audit of {when}'), when=at(checkpoint['full_at']))
    {{!fill(_('This audit verified fully up to entry #{entry} ({entries}) on {when} by {by} (checkpoint #{checkpoint}); entries after it verified now: {now}.'), entry=ident(checkpoint['entry_id']), entries=ngettext('{n} entry', '{n} entries', checkpoint['entries']), when=at(checkpoint['verified_at']), by=by, checkpoint=ident(checkpoint['id']), now=num(scope['entries_verified']))}}
     {{_('Rows up to the checkpoint are trusted as that audit verified them:')}}
     <a href="/admin/audit?full=true" id="full-audit">{{_('verify every row again')}}</a> {{_('(takes longer).')}}
  % end
  </p>
  <dl class="totals">
    <dt>{{_('Sellers')}}</dt><dd>{{num(totals['sellers'])}}</dd>
    <dt>{{_('Ledger entries')}}</dt><dd>{{num(totals['ledger_entries'])}}</dd>
    <dt>{{_('Sales')}}</dt><dd>{{num(totals['sales'])}}</dd>
    <dt>{{_('Credit held')}}</dt><dd>{{toman(totals['balance_sum'])}}</dd>
  </dl>
</section>
% if result['problems']:
<section class="card">
  <h2>{{_('Problems')}}</h2>
  <div class="scroll">
  <table class="list" id="problems">
    <thead><tr><th>{{_('Invariant')}}</th><th>{{_('Seller')}}</th><th>{{_('Entry')}}</th><th>{{_('What')}}</th></tr></thead>
    <tbody>
    % for problem in result['problems']:
      % kind = 'guards' if problem['invariant'] == 'I5' and not problem['seller_id'] else problem['invariant']
      <tr><td>{{WHAT.get(kind, kind)}}</td><td class="id">{{ident(problem['seller_id']) if problem['seller_id'] else ''}}</td><td class="id">{{ident(problem['entry_id']) if problem['entry_id'] else ''}}</td>
          <td><code dir="ltr" lang="en" translate="no">{{problem['message']}}</code></td></tr>
    % end
    </tbody>
  </table>
  </div>
  % if bad:
  <p>{{_("Sellers whose balance is off:")}}
  % for seller in bad[:50]:
    <a href="/admin/sellers/{{seller['seller_id']}}">{{_('#{id}').format(id=ident(seller['seller_id']))}}</a>
  % end
  </p>
  % end
</section>
% end
