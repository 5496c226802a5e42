-- Wrong second-factor codes lock that step for the user (issue 7, "Accounts").
-- One row per (user, step) while attempts are being counted; a success deletes it.
-- step: 'code'  = a code of the account's own secret (login's second step, turning 2FA off,
--                 re-authenticating a social-only account);
--       'setup' = the code that proves a new secret while enabling 2FA.

CREATE TABLE second_factor_attempts (
    user_id       bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    step          text NOT NULL CHECK (step IN ('code', 'setup')),
    attempts      integer NOT NULL DEFAULT 0,   -- attempts claimed since the last success or lock
    last_attempt  timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    PRIMARY KEY (user_id, step)
);
