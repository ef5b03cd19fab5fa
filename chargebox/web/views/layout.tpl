<!doctype html>
<html lang="{{lang}}" dir="{{dir}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} · chargebox</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="bar">
  <a class="brand" href="/" translate="no" lang="en" dir="ltr">chargebox</a>
  % if visitor:
  <nav class="menu" aria-label="{{_('Pages')}}">
    % if visitor.principal.is_admin:
    <a href="/admin">{{_('Requests & sellers')}}</a>
    <a href="/admin/audit">{{_('Audit')}}</a>
    <a href="/admin/charts" id="nav-charts">{{_('Charts')}}</a>
    % else:
    <a href="/seller">{{_('Your account')}}</a>
    <a href="/seller/charts" id="nav-charts">{{_('Charts')}}</a>
    % end
    <form method="post" action="/logout" class="inline" data-once>
      <input type="hidden" name="csrf" value="{{visitor.csrf}}">
      <button type="submit" class="quiet" id="sign-out">{{_('Sign out')}}</button>
    </form>
  </nav>
  % end
  <nav class="languages" id="languages" aria-label="{{_('Language')}}">
    % for code, name, href in switch:
    % if code == lang:
    <span class="current" aria-current="true" lang="{{code}}" translate="no">{{name}}</span>
    % else:
    <a href="{{href}}" lang="{{code}}" hreflang="{{code}}" translate="no" id="language-{{code}}">{{name}}</a>
    % end
    % end
  </nav>
</header>
<main>
% if notice:
<p class="notice ok" role="status" id="notice">{{notice}}</p>
% end
{{!base}}
</main>
</body>
</html>
