"""schemathesis hooks for tests/openapi.rs: keeps the test from breaking the machine it runs on.

POST /chaos/load and POST /chaos/hang take an optional body, and without one (or with only
whitespace) they start the default load (60 s) or hang (until restart). Their pass sends invalid
data only, which must be refused; a missing or blank body is documented as "all defaults", not
invalid data, so it is not sent.
"""

import schemathesis
from schemathesis.core import NOT_SET

STARTS_A_FAULT_WITHOUT_A_BODY = {"/chaos/load", "/chaos/hang"}


@schemathesis.hook
def filter_case(ctx, case):
    if case.operation.path in STARTS_A_FAULT_WITHOUT_A_BODY:
        blank = isinstance(case.body, (str, bytes)) and not case.body.strip()
        return case.body is not NOT_SET and case.body is not None and not blank
    return True
