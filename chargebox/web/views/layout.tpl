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
  <a class="brand" href="/">chargebox</a>
  % if visitor:
  <nav>
    % if visitor.principal.is_admin:
    <a href="/admin">Requests &amp; sellers</a>
    <a href="/admin/audit">Audit</a>
    <a href="/admin/charts" id="nav-charts">{{_('Charts')}}</a>
    % else:
    <a href="/seller">Your account</a>
    <a href="/seller/charts" id="nav-charts">{{_('Charts')}}</a>
    % end
    <form method="post" action="/logout" class="inline" data-once>
      <input type="hidden" name="csrf" value="{{visitor.csrf}}">
      <button type="submit" class="quiet" id="sign-out">Sign out</button>
    </form>
  </nav>
  % end
</header>
<main>
% if notice:
<p class="notice ok" role="status" id="notice">{{notice}}</p>
% end
{{!base}}
</main>
</body>
</html>
