% rebase('layout')
<section class="card narrow">
  <h1>{{title}}</h1>
  <p class="notice bad" id="error-message">{{message}}</p>
  <p><a href="/">{{_('Back to the start page')}}</a></p>
</section>
