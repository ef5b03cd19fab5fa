% rebase('layout')
% bad = [s for s in result['sellers'] if not s['consistent']]
<section class="card">
  <h1>Audit</h1>
  % if result['consistent']:
  <p class="verdict good" id="verdict">✓ The books are consistent</p>
  % else:
  <p class="verdict bad" id="verdict">✗ The books are NOT consistent: {{result['problem_count']}} problem(s)</p>
  % end
  <p>Every balance was checked against the sum of its ledger entries, every entry against
     the one before it (invariants I1–I5), and each seller's sealed chain against the ledger key.</p>
  <p id="scope">This audit {{result['scope']['summary']}}.
  % if not result['scope']['full']:
     Rows up to the checkpoint are trusted as that audit verified them:
     <a href="/admin/audit?full=true" id="full-audit">verify every row again</a> (takes longer).
  % end
  </p>
  <dl class="totals">
    <dt>Sellers</dt><dd>{{f"{result['totals']['sellers']:,}"}}</dd>
    <dt>Ledger entries</dt><dd>{{f"{result['totals']['ledger_entries']:,}"}}</dd>
    <dt>Sales</dt><dd>{{f"{result['totals']['sales']:,}"}}</dd>
    <dt>Credit held</dt><dd>{{toman(result['totals']['balance_sum'])}}</dd>
  </dl>
</section>
% if result['problems']:
<section class="card">
  <h2>Problems</h2>
  <div class="scroll">
  <table class="list" id="problems">
    <thead><tr><th>Invariant</th><th>Seller</th><th>Entry</th><th>What</th></tr></thead>
    <tbody>
    % for problem in result['problems']:
      <tr><td>{{problem['invariant']}}</td><td>{{problem['seller_id'] or ''}}</td><td>{{problem['entry_id'] or ''}}</td><td>{{problem['message']}}</td></tr>
    % end
    </tbody>
  </table>
  </div>
  % if bad:
  <p>Sellers whose balance is off: 
  % for seller in bad[:50]:
    <a href="/admin/sellers/{{seller['seller_id']}}">#{{seller['seller_id']}}</a>
  % end
  </p>
  % end
</section>
% end
