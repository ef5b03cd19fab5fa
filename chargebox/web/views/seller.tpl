% rebase('layout')
<section class="card summary">
  <h1><bdi>{{seller['name']}}</bdi></h1>
  <p class="label">{{_('Balance')}}</p>
  <p class="balance" id="balance">{{toman(seller['balance'])}}</p>
</section>

<div class="columns">
<section class="card" aria-labelledby="sell-title">
  <h2 id="sell-title">{{_('Sell a charge')}}</h2>
  <form method="post" action="/seller/sales" id="sale-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <input type="hidden" name="idempotency_key" id="sale-form-key" value="{{sale_key}}">
    % include('field', state=sale, form_id='sale', name='phone', label=_('Phone number'), inputmode='tel', direction='ltr', maxlength=64, placeholder=digits('0912 123 4567'), hint=_('Iranian mobile; Persian digits are fine.'))
    % include('field', state=sale, form_id='sale', name='amount', label=_('Amount (toman)'), inputmode='numeric', direction='ltr', maxlength=40, placeholder=num(50000))
    <button type="submit" id="sell-button">{{_('Sell')}}</button>
  </form>
</section>

<section class="card" aria-labelledby="credit-title">
  <h2 id="credit-title">{{_('Request credit')}}</h2>
  <form method="post" action="/seller/credit-requests" id="credit-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    <input type="hidden" name="idempotency_key" id="credit-form-key" value="{{credit_key}}">
    % include('field', state=credit, form_id='credit', name='amount', label=_('Amount (toman)'), inputmode='numeric', direction='ltr', maxlength=40, placeholder=num(1000000), hint=_('The admin approves or rejects it.'))
    <button type="submit" id="credit-button">{{_('Request credit')}}</button>
  </form>
  % if requests:
  % include('requests', requests=requests, caption=_('Your latest credit requests'))
  % end
</section>
</div>

% include('statement_form', action='/seller/statement', state=statement)

<section class="card">
  <h2>{{_('Latest ledger entries')}}</h2>
  <p>{{!fill(_('{find} by phone, order id or time.'), find=wrap('a', _('Find a sale'), ' href="/seller/sales/found" id="find-link"'))}}</p>
  % include('entries', entries=entries)
</section>
