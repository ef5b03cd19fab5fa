% rebase('layout')
% if problem:
<p class="notice bad" role="alert" id="problem">{{problem}}</p>
% end
<section class="card">
  <h1>{{_('Pending credit requests')}}</h1>
  <p id="pending-summary">{{!fill(_('{total} waiting in all.'), total=wrap('strong', num(total), ' id="pending-total"'))}}
  % if of_seller:
    % seller_name = of_seller['name'] or _('no such seller')
    {{!fill(_('{count} from {seller} #{id}.'), count=wrap('strong', num(of_seller['pending']), ' id="pending-of-seller"'), seller=wrap('bdi', seller_name), id=ident(of_seller['seller_id']))}}
  % end
  </p>
  % if counts:
  <form method="get" action="/admin" class="filter" id="pending-filter">
    <label for="pending-seller">{{_('Seller')}}</label>
    <select id="pending-seller" name="seller_id">
      <option value="">{{fill(_('All sellers ({count})'), count=num(total))}}</option>
      % for row in counts:
      <option value="{{row['seller_id']}}"{{!' selected' if of_seller is row else ''}}>{{_('{seller} #{id} ({count})').format(seller=isolate(row['name'] or _('no such seller')), id=ident(row['seller_id']), count=num(row['pending']))}}</option>
      % end
    </select>
    <button type="submit" class="quiet" id="pending-filter-button">{{_('Show')}}</button>
  </form>
  % end
  % if pending:
  <div class="scroll">
  <table class="list stack requests" id="pending">
    <thead><tr><th>#</th><th>{{_('Seller')}}</th><th class="num">{{_('Amount (toman)')}}</th><th>{{_('Asked (Tehran time)')}}</th><th><span class="sr-only">{{_('Decision')}}</span></th></tr></thead>
    <tbody>
    % for request in pending:
      <tr id="request-{{request['id']}}">
        <td class="id">{{ident(request['id'])}}</td>
        <td class="what"><a href="/admin/sellers/{{request['seller_id']}}"><bdi>{{names[request['seller_id']]}}</bdi></a></td>
        <td class="num amount">{{num(request['amount'])}}</td>
        <td class="when">{{when(request['created_at'])}}</td>
        <td class="actions">
          <form method="post" action="/admin/credit-requests/{{request['id']}}/approve{{view}}" class="inline" data-once>
            <input type="hidden" name="csrf" value="{{visitor.csrf}}">
            <button type="submit" class="good" id="approve-{{request['id']}}">{{_('Approve')}}<span class="sr-only"> {{_('credit request #{id}').format(id=ident(request['id']))}}</span></button>
          </form>
          <form method="post" action="/admin/credit-requests/{{request['id']}}/reject{{view}}" class="inline" data-once>
            <input type="hidden" name="csrf" value="{{visitor.csrf}}">
            <button type="submit" class="bad" id="reject-{{request['id']}}">{{_('Reject')}}<span class="sr-only"> {{_('credit request #{id}').format(id=ident(request['id']))}}</span></button>
          </form>
        </td>
      </tr>
    % end
    </tbody>
  </table>
  </div>
  % else:
  <p class="empty" id="no-pending">{{_('No credit request is waiting here.') if first_url or of_seller else _('No credit request is waiting.')}}</p>
  % end
  % if first_url or next_url:
  <p class="pager">
    % if first_url:
    <a href="{{first_url}}" id="first-pending">{{_('Oldest requests')}}</a>
    % end
    % if next_url:
    <a href="{{next_url}}" id="next-pending">{{ngettext('Next {n} request', 'Next {n} requests', per_page)}}</a>
    % end
  </p>
  % end
</section>

<div class="columns">
<section class="card">
  <h2>{{_('Sellers')}}</h2>
  % if sellers:
  <div class="scroll">
  <table class="list" id="sellers">
    <thead><tr><th>#</th><th>{{_('Name')}}</th><th class="num">{{_('Balance (toman)')}}</th></tr></thead>
    <tbody>
    % for seller in sellers:
      <tr><td class="id">{{ident(seller['id'])}}</td><td><a href="/admin/sellers/{{seller['id']}}"><bdi>{{seller['name']}}</bdi></a>
          % if seller['status'] == 'suspended':
          <span class="status suspended" id="suspended-{{seller['id']}}">{{status('suspended')}}</span>
          % end
          </td>
          <td class="num">{{num(seller['balance'])}}</td></tr>
    % end
    </tbody>
  </table>
  </div>
  % else:
  <p class="empty">{{_('No sellers yet.')}}</p>
  % end
  <p class="pager">
  % if after_id:
    <a href="/admin">{{_('First page')}}</a>
  % end
  % if next_after:
    <a href="/admin?after_id={{next_after}}" id="next-sellers">{{_('Next sellers')}}</a>
  % end
  </p>
</section>

<section class="card">
  <h2>{{_('Create a seller')}}</h2>
  <form method="post" action="/admin/sellers" id="create-seller-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    % include('field', state=create, form_id='seller', name='name', label=_('Name'), maxlength=200, hint=_('Persian names are fine.'))
    <button type="submit" id="create-seller-button">{{_('Create seller')}}</button>
  </form>
</section>
</div>
