"""Statement production: what is due when, the pure build, storage and cutting, audit, exports.

Each bank account gets its statements on its redevable's schedule, each one cut exactly once.
Modules: :mod:`.plan` (due dates, first periods, the night after a due date), :mod:`.build`
(pure: rows in, lines, balances and CFONB120/CSV bytes out), :mod:`.storage` (what a cut reads
and writes), :mod:`.cut` (cutting the due statements in batches), :mod:`.audit` (invariants of
the produced chain) and :mod:`.exports` (the files as downloads).

The rules (``docs/statements.md`` has the long version):

- The statement due on D covers the period (period_start, D]: period_start is the previous
  statement's due date (the chain), or the account's activation - 1 month for its first
  statement (the manual: activated 05/09, first quarterly due 01/10 -> 06/08..01/10). It
  is cut in the night after D, once the account has been collected after the end of D (Paris
  time): the data must be "as of" a moment after D.
- It reports every transaction of the account not yet reported, booked (or pending when the
  redevable has ``include_pending``), with booking date <= D, except the *opening set*: rows
  already booked at the first statement's collection with booking date <= the first period
  start, which make up the first opening balance. Late postings land in the next statement
  with their true dates (CFONB allows a booking date before the 01's date).
- Corrections: a reported transaction the bank deleted, replaced or changed (amount, dates,
  label) since it was reported goes to the deleted-transactions CSV of the next statement,
  which *withdraws* the reported line; a changed transaction that is still reportable is
  reported again in the same statement with its new values. A transaction reported while
  pending that gets booked unchanged is simply settled (no CSV line).
- Balances: the first opening balance is the bank's balance at D (the balance the bank reported
  at the collection, minus the booked movements dated after D) minus the booked movements of
  the statement; afterwards opening = previous closing; closing = opening + movements. The
  closing balance is compared with the bank's balance at D; the gap explained by the files
  (amounts withdrawn by CSVs so far, reported pending movements) is subtracted, and what
  remains is a mismatch: recorded on the statement and as a bank event, never hidden.
- One database transaction per statement: the statement row, its lines, its files (CFONB and
  CSV bytes, a pure function of the statement's data), the transactions' reporting marks and
  the account's ``last_reported_date``. A crash leaves nothing or everything; the unique
  (account, due date) constraint makes a second cut impossible.
- Entry numbers (04 positions 82-88): a counter per account, given to the movement lines in
  the statement's order when it is cut and stored on the lines in the same transaction; the
  next statement goes on from the previous one's last number, so a retry gives the same
  numbers and no number comes twice on an account. A movement withdrawn by a CSV and
  reported again is a new line with a new number.
- When the night is over and the account has no fresh data, a row is kept ``waiting``
  (no failure known: the collection is late) or ``failed`` (the connection failed, reason in
  French); it is completed in place as soon as fresh data arrives, in due date order.
"""
