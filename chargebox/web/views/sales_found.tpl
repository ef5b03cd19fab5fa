% rebase('layout')
<section class="card" aria-labelledby="find-title">
  <h1 id="find-title">{{_('Find a sale')}}</h1>
  <form method="get" action="/seller/sales/found" id="find-form">
    % include('field', state=search, form_id='find', name='phone', label=_('Phone number'), inputmode='tel', direction='ltr', maxlength=64, required=False, placeholder=digits('0912 123 4567'), hint=_('Any spelling; Persian digits are fine.'))
    % include('field', state=search, form_id='find', name='idempotency_key', label=_('Order id (your Idempotency-Key)'), direction='ltr', maxlength=255, required=False)
    % if lang == 'fa':
    %   # Jalali dates, typed: a browser's datetime-local widget is Gregorian (pages.find_sales reads them).
    %   example = language.today() + ' ' + digits('14:30')
    % include('field', state=search, form_id='find', name='from', label=_('From (Tehran time)'), direction='ltr', maxlength=40, required=False, placeholder=example, hint=_('A Jalali date, with a time of day if need be.'))
    % include('field', state=search, form_id='find', name='to', label=_('Up to (Tehran time)'), direction='ltr', maxlength=40, required=False, placeholder=example, hint=_('A date alone: up to the end of that day; with a time: before it.'))
    % else:
    % include('field', state=search, form_id='find', name='from', label=_('From (Tehran time)'), kind='datetime-local', direction='ltr', maxlength=40, required=False)
    % include('field', state=search, form_id='find', name='to', label=_('Before (Tehran time)'), kind='datetime-local', direction='ltr', maxlength=40, required=False)
    % end
    <button type="submit" id="find-button">{{_('Find')}}</button>
  </form>
</section>
% if sales is not None:
<section class="card">
  <h2 id="found-title">{{_('Sales found, newest first') if not before else _('Sales found before sale #{id}, newest first').format(id=ident(before))}}</h2>
  % if sales:
  <div class="scroll">
  <table class="list stack found" id="sales-found">
    <thead><tr><th>#</th><th>{{_('When (Tehran time)')}}</th><th>{{_('Phone')}}</th><th>{{_('Order id')}}</th><th class="num">{{_('Amount (toman)')}}</th><th class="num">{{_('Balance after')}}</th><th>{{_('Refund')}}</th></tr></thead>
    <tbody>
    % for sale in sales:
      <tr><td>{{ident(sale['id'])}}</td><td class="when">{{when(sale['created_at'])}}</td><td class="what"><span class="phone" dir="ltr">{{digits(sale['phone'])}}</span></td>
          % if sale['id'] in orders:
          <td class="order"><span class="narrow-only">{{_('order id')}} </span><span class="order-id" dir="ltr" translate="no">{{orders[sale['id']]}}</span></td>
          % else:
          <td class="order"></td>
          % end
          <td class="num amount">{{num(sale['amount'])}}</td><td class="num after"><span class="narrow-only">{{_('balance')}} </span>{{num(sale['balance_after'])}}</td>
          % if sale['refunded_at']:
          <td class="refund"><span class="status refunded" id="found-refunded-{{sale['id']}}">{{!fill(_('refunded {when}'), when=at(sale['refunded_at']))}}</span></td></tr>
          % else:
          <td class="refund"></td></tr>
          % end
    % end
    </tbody>
  </table>
  </div>
  % else:
  <p class="empty">{{_('No sale matches.') if not first_url else _('No more sales match.')}}</p>
  % end
  % if first_url or older_url:
  <nav class="pager" aria-labelledby="found-title">
    % if first_url:
    <a href="{{first_url}}" id="first-found">{{_('Newest sales')}}</a>
    % end
    % if older_url:
    <a href="{{older_url}}" id="older-found">{{_('Older sales')}}</a>
    % end
  </nav>
  % end
</section>
% end
