"""Names and reasons that pass text.clean_text but do not show what they say.

Found in review (issue 10, item 6; docs/api.md "Names and reasons": they "must show
what they say"). Checked with libfribidi (the Unicode bidi algorithm browsers use):

- `refund \\u061c12 34` (ARABIC LETTER MARK, not among the marks the docs keep)
  shows as `refund 34 12`;
- TAG characters (U+E0000 block, format characters) carry invisible ASCII: a name
  `Ali` + tags spelling `admin` shows `Ali` and says `Aliadmin`;
- LINE SEPARATOR / PARAGRAPH SEPARATOR inside a name: clean_text's docstring promises
  "single-line text", and they break lines wherever the text is shown as text.

(Not tested here, since the docs choose to keep them: an RLM between digit groups,
`order 123\\u200f 456`, shows `order 123456`; a balanced RLI, `\\u206710 000\\u2069`,
shows `000 10`.)
"""

from __future__ import annotations

import pytest

from chargebox.errors import ValidationError
from chargebox.text import clean_text

TAGS = "".join(chr(0xE0000 + ord(c)) for c in "admin")


@pytest.mark.parametrize(
    "text",
    ["refund \u061c12 34", "Ali" + TAGS, "Ali\u2028Mobile", "Ali\u2029Mobile"],
    ids=["arabic-letter-mark-reorders-digits", "tag-characters", "line-sep", "paragraph-sep"],
)
def test_text_that_shows_something_else_than_it_says_is_refused(text):
    with pytest.raises(ValidationError):
        clean_text(text, "reason", 500)
