% error = state.error(name)
% field_id = form_id + "-" + name
<div class="field{{' invalid' if error else ''}}">
  <label for="{{field_id}}">{{label}}</label>
  <input id="{{field_id}}" name="{{name}}" value="{{state.value(name)}}" dir="{{get('direction', 'auto')}}"
         type="{{get('kind', 'text')}}" inputmode="{{get('inputmode', 'text')}}" autocomplete="off"
         {{!'required' if get('required', True) else ''}} maxlength="{{get('maxlength', 200)}}"
         % if error:
         aria-invalid="true" aria-describedby="{{field_id}}-error" autofocus
         % elif get('hint'):
         aria-describedby="{{field_id}}-hint"
         % end
         placeholder="{{get('placeholder', '')}}">
  % if error:
  <p class="error" id="{{field_id}}-error" role="alert">{{error}}</p>
  % elif get('hint'):
  <p class="hint" id="{{field_id}}-hint">{{hint}}</p>
  % end
</div>
