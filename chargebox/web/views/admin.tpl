% rebase('layout')
% if problem:
<p class="notice bad" role="alert" id="problem">{{problem}}</p>
% end
<section class="card">
  <h1>Pending credit requests</h1>
  <p id="pending-summary"><strong id="pending-total">{{f"{total:,}"}}</strong> waiting in all.
  % if of_seller:
    <strong id="pending-of-seller">{{f"{of_seller['pending']:,}"}}</strong> from <bdi>{{of_seller['name'] or 'no such seller'}}</bdi> #{{of_seller['seller_id']}}.
  % end
  </p>
  % if counts:
  <form method="get" action="/admin" class="filter" id="pending-filter">
    <label for="pending-seller">Seller</label>
    <select id="pending-seller" name="seller_id">
      <option value="">All sellers ({{f"{total:,}"}})</option>
      % for row in counts:
      <option value="{{row['seller_id']}}"{{!' selected' if of_seller is row else ''}}>{{isolate(row['name'] or 'no such seller')}} #{{row['seller_id']}} ({{f"{row['pending']:,}"}})</option>
      % end
    </select>
    <button type="submit" class="quiet" id="pending-filter-button">Show</button>
  </form>
  % end
  % if pending:
  <div class="scroll">
  <table class="list stack requests" id="pending">
    <thead><tr><th>#</th><th>Seller</th><th class="num">Amount</th><th>Asked</th><th></th></tr></thead>
    <tbody>
    % for request in pending:
      <tr id="request-{{request['id']}}">
        <td class="id">{{request['id']}}</td>
        <td class="what"><a href="/admin/sellers/{{request['seller_id']}}"><bdi>{{names[request['seller_id']]}}</bdi></a></td>
        <td class="num amount">{{f"{request['amount']:,}"}}</td>
        <td class="when">{{when(request['created_at'])}}</td>
        <td class="actions">
          <form method="post" action="/admin/credit-requests/{{request['id']}}/approve{{view}}" class="inline" data-once>
            <input type="hidden" name="csrf" value="{{visitor.csrf}}">
            <button type="submit" class="good" id="approve-{{request['id']}}">Approve</button>
          </form>
          <form method="post" action="/admin/credit-requests/{{request['id']}}/reject{{view}}" class="inline" data-once>
            <input type="hidden" name="csrf" value="{{visitor.csrf}}">
            <button type="submit" class="bad" id="reject-{{request['id']}}">Reject</button>
          </form>
        </td>
      </tr>
    % end
    </tbody>
  </table>
  </div>
  % else:
  <p class="empty" id="no-pending">No credit request is waiting{{' here' if first_url or of_seller else ''}}.</p>
  % end
  % if first_url or next_url:
  <p class="pager">
    % if first_url:
    <a href="{{first_url}}" id="first-pending">Oldest requests</a>
    % end
    % if next_url:
    <a href="{{next_url}}" id="next-pending">Next {{per_page}} requests</a>
    % end
  </p>
  % end
</section>

<div class="columns">
<section class="card">
  <h2>Sellers</h2>
  % if sellers:
  <div class="scroll">
  <table class="list" id="sellers">
    <thead><tr><th>#</th><th>Name</th><th class="num">Balance</th></tr></thead>
    <tbody>
    % for seller in sellers:
      <tr><td>{{seller['id']}}</td><td><a href="/admin/sellers/{{seller['id']}}"><bdi>{{seller['name']}}</bdi></a></td>
          <td class="num">{{f"{seller['balance']:,}"}}</td></tr>
    % end
    </tbody>
  </table>
  </div>
  % else:
  <p class="empty">No sellers yet.</p>
  % end
  <p class="pager">
  % if after_id:
    <a href="/admin">First page</a>
  % end
  % if next_after:
    <a href="/admin?after_id={{next_after}}" id="next-sellers">Next sellers</a>
  % end
  </p>
</section>

<section class="card">
  <h2>Create a seller</h2>
  <form method="post" action="/admin/sellers" id="create-seller-form" data-once>
    <input type="hidden" name="csrf" value="{{visitor.csrf}}">
    % include('field', state=create, form_id='seller', name='name', label='Name', maxlength=200, hint='Persian names are fine.')
    <button type="submit" id="create-seller-button">Create seller</button>
  </form>
</section>
</div>
