% rebase('layout')
<section class="card narrow">
  <h1>{{_('Sign in')}}</h1>
  <p>{{_('Sellers sign in with their API key; the admin with the admin token.')}}</p>
  <form method="post" action="/login" id="login-form" data-once>
    <input type="hidden" name="csrf" value="{{csrf}}">
    % include('field', state=form, form_id='login', name='token', label=_('API key or admin token'), kind='password', direction='ltr', maxlength=512)
    % include('reveal_button', target='login-token')
    <button type="submit" id="login-button">{{_('Sign in')}}</button>
  </form>
</section>
