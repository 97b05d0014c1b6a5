-- The invariant checker's figures (tests/chaos/README.md defines every
-- column). Runs in the services' own database, after check.sh has loaded
-- what the others know into schema chaos:
--   chaos.tenants (phase_no, phase, mode, tenant_id, account)  which tenant
--                           (and emulator account) served which phase
--   chaos.observed (doc)    chaos-load's record of each session (JSON)
--   chaos.intents (doc)     the emulator's PaymentIntents (/_emulator/payment_intents)
--   chaos.refunds (doc)     the emulator's refunds (/_emulator/refunds)
--   chaos.faults (phase, fired)  the emulator's fault rules fired in each phase
--   chaos.deliveries (doc)  the emulator's webhook deliveries (/_emulator/webhooks)
-- and reads the payment ledger (schema payment) and metering's sessions
-- (schema metering) as the services left them. :tol is one metering tick
-- plus the stated slack, in ppm milliseconds.
\set ON_ERROR_STOP 1

-- Ledger payments of the run, with what happened to their money.
CREATE TEMP TABLE pay AS
SELECT p.payment_id, p.tenant_id, p.session_id, p.minutes, p.amount, p.state, p.captured,
       p.refunded, p.stripe_payment_intent AS pi_id, t.phase,
       EXISTS (SELECT 1 FROM payment.transitions x
               WHERE x.payment_id = p.payment_id AND x.to_state IN ('authorized', 'succeeded'))
           AS took_money,
       o.payment_id IS NOT NULL AS in_outbox, o.delivered_at_ms, coalesce(o.outcome, '') AS outcome
FROM payment.payments p
JOIN chaos.tenants t ON t.tenant_id = p.tenant_id
LEFT JOIN payment.outbox o ON o.payment_id = p.payment_id;
-- metering refused the funding (the session was over): the money must be
-- given back in full (refund of the charge, or release of the hold)
ALTER TABLE pay ADD COLUMN refused boolean, ADD COLUMN given_back boolean;
UPDATE pay SET refused = outcome LIKE 'refused%',
               given_back = outcome LIKE 'refused%'
                            AND (state = 'canceled' OR (captured > 0 AND refunded = captured));

-- The emulator's PaymentIntents and refunds of the run's tenants.
CREATE TEMP TABLE pi AS
SELECT doc->>'id' AS id, doc->'metadata'->>'payment' AS payment_id,
       doc->'metadata'->>'tenant' AS tenant_id, doc->'metadata'->>'session' AS session_id,
       doc->>'status' AS status, (doc->>'amount')::bigint AS amount,
       coalesce((doc->>'amount_received')::bigint, 0) AS received,
       t.phase
FROM chaos.intents
JOIN chaos.tenants t ON t.tenant_id = doc->'metadata'->>'tenant';
CREATE TEMP TABLE pi_refunds AS
SELECT doc->>'payment_intent' AS pi_id, sum((doc->>'amount')::bigint) AS refunded
FROM chaos.refunds
WHERE doc->>'status' IN ('succeeded', 'pending')
GROUP BY 1;

-- What the load generator saw, per session.
CREATE TEMP TABLE obs AS
SELECT doc->>'phase' AS phase, doc->>'session_id' AS session_id, doc->>'plan' AS plan,
       (doc->>'funded_ms')::bigint AS funded_ms, (doc->>'deadline')::bigint AS deadline,
       (doc->>'deadline_min')::bigint AS deadline_min,
       (doc->>'deadline_max')::bigint AS deadline_max,
       (doc->>'active_over_ms')::bigint AS active_over_ms,
       (doc->>'heartbeat_over_ms')::bigint AS heartbeat_over_ms,
       (doc->>'funded_dropped')::boolean AS funded_dropped,
       (doc->>'paused_seen')::boolean AS paused_seen, doc->>'error' AS error,
       (doc->'http'->>'retried')::int AS retried, (doc->'http'->>'unavailable')::int AS unavailable,
       (doc->'http'->>'no_answer')::int AS no_answer,
       (doc->'http'->>'session_not_found')::int AS not_found,
       (doc->'sse'->>'expired_late_real_ms')::bigint AS expired_late_real_ms
FROM chaos.observed;

-- metering's sessions of the run (state 4 = expired, end_reason 4 = expired).
CREATE TEMP TABLE ses AS
SELECT s.session_id, s.tenant_id, t.phase, s.state, s.end_reason, s.funded_ms, s.trial_ms,
       s.used_ms, s.ended_ms, s.finalized, s.paid_amount,
       coalesce((SELECT sum(p.minutes) * 60000 FROM pay p
                 WHERE p.session_id = s.session_id AND p.took_money), 0) AS paid_ms,
       coalesce((SELECT sum(p.minutes) * 60000 FROM pay p
                 WHERE p.session_id = s.session_id AND p.took_money AND NOT p.given_back), 0)
           AS kept_ms,
       ms.billed_amount, ms.acked_ms, ps.done AS payment_settled,
       coalesce((SELECT sum(i.received) - sum(coalesce(r.refunded, 0))
                 FROM pi i LEFT JOIN pi_refunds r ON r.pi_id = i.id
                 WHERE i.session_id = s.session_id), 0) AS net_charged
FROM metering.sessions s
JOIN chaos.tenants t ON t.tenant_id = s.tenant_id
LEFT JOIN metering.settlements ms ON ms.session_id = s.session_id
LEFT JOIN payment.settlements ps ON ps.tenant_id = s.tenant_id AND ps.session_id = s.session_id;

-- Per session: the must-be-zero facts (true = violated).
CREATE TEMP TABLE verdict AS
SELECT s.session_id, s.phase,
       -- paid time lost
       (s.kept_ms > s.funded_ms
        OR coalesce(o.funded_dropped, false)
        OR (s.end_reason = 4 AND s.used_ms + :tol < s.funded_ms + s.trial_ms)
        OR (o.deadline IS NOT NULL AND NOT o.paused_seen AND o.funded_ms = s.funded_ms
            AND (o.deadline_min < o.deadline - :tol
                 OR (s.end_reason = 4 AND s.ended_ms < o.deadline - :tol)))) AS lost,
       -- ran past its paid time
       (o.deadline IS NOT NULL AND NOT o.paused_seen AND o.funded_ms = s.funded_ms
        AND (o.active_over_ms > :tol OR o.heartbeat_over_ms > :tol
             OR o.deadline_max > o.deadline + :tol
             OR (s.end_reason = 4 AND s.ended_ms > o.deadline + :tol))) AS ran_past,
       -- unpaid time given
       (s.funded_ms > s.paid_ms
        OR (s.paid_amount > 0 AND s.used_ms > s.funded_ms + s.trial_ms + :tol)
        OR (s.acked_ms IS NOT NULL AND coalesce(s.payment_settled, false)
            AND s.net_charged < s.billed_amount)) AS unpaid,
       -- charged for time not used
       (s.acked_ms IS NOT NULL AND coalesce(s.payment_settled, false)
        AND s.net_charged > s.billed_amount) AS overcharged,
       -- not over, or not settled on both sides
       (NOT s.finalized OR s.acked_ms IS NULL
        OR (s.paid_ms > 0 AND NOT coalesce(s.payment_settled, false))) AS unsettled
FROM ses s
LEFT JOIN obs o ON o.session_id = s.session_id;

-- Per ledger payment.
CREATE TEMP TABLE pay_verdict AS
SELECT p.payment_id, p.phase,
       -- more than one PaymentIntent took (or holds) money for this payment
       (SELECT count(*) FROM pi i
        WHERE i.payment_id = p.payment_id AND (i.received > 0 OR i.status = 'requires_capture'))
           > 1 AS double_charge,
       -- ledger and Stripe disagree on the money
       (p.pi_id IS NOT NULL
        AND (NOT EXISTS (SELECT 1 FROM pi i WHERE i.id = p.pi_id)
             OR EXISTS (SELECT 1 FROM pi i LEFT JOIN pi_refunds r ON r.pi_id = i.id
                        WHERE i.id = p.pi_id
                          AND (i.received <> p.captured
                               OR coalesce(r.refunded, 0) <> p.refunded
                               OR (i.status = 'requires_capture') <> (p.state = 'authorized')))))
           AS mismatch,
       -- not final after reconciliation
       (p.state IN ('created', 'pending', 'requires_action', 'authorized')
        OR (p.took_money AND p.in_outbox AND p.delivered_at_ms IS NULL)
        OR (p.refused AND NOT p.given_back)) AS stuck
FROM pay p;

-- Charges at Stripe that no ledger payment knows (a double charge too).
CREATE TEMP TABLE orphan_charges AS
SELECT i.id, i.phase FROM pi i
WHERE (i.received > 0 OR i.status = 'requires_capture')
  AND NOT EXISTS (SELECT 1 FROM pay p WHERE p.payment_id = i.payment_id);

CREATE TEMP TABLE phases AS
SELECT phase, min(phase_no) AS phase_no FROM chaos.tenants GROUP BY phase;

CREATE TEMP TABLE result AS
SELECT ph.phase, ph.phase_no,
       (SELECT count(*) FROM ses s WHERE s.phase = ph.phase) AS sessions,
       (SELECT count(*) FROM obs o WHERE o.phase = ph.phase) AS flows,
       (SELECT count(*) FROM obs o WHERE o.phase = ph.phase AND o.error <> '') AS flow_errors,
       (SELECT count(*) FROM pay p WHERE p.phase = ph.phase) AS payments,
       (SELECT count(*) FROM pi i WHERE i.phase = ph.phase AND i.received > 0) AS charges_emulator,
       (SELECT count(*) FROM pay p WHERE p.phase = ph.phase AND p.captured > 0) AS charges_ledger,
       (SELECT count(*) FROM pay_verdict v WHERE v.phase = ph.phase AND v.double_charge)
         + (SELECT count(*) FROM orphan_charges c WHERE c.phase = ph.phase) AS double_charges,
       (SELECT count(*) FROM verdict v WHERE v.phase = ph.phase AND v.lost) AS paid_time_lost,
       (SELECT count(*) FROM verdict v WHERE v.phase = ph.phase AND v.ran_past) AS ran_past,
       (SELECT count(*) FROM verdict v WHERE v.phase = ph.phase AND v.unpaid) AS unpaid_time,
       (SELECT count(*) FROM verdict v WHERE v.phase = ph.phase AND v.overcharged) AS overcharged,
       (SELECT count(*) FROM pay_verdict v WHERE v.phase = ph.phase AND v.mismatch)
           AS ledger_vs_stripe,
       (SELECT count(*) FROM pay_verdict v WHERE v.phase = ph.phase AND v.stuck) AS stuck,
       (SELECT count(*) FROM verdict v WHERE v.phase = ph.phase AND v.unsettled) AS unsettled
FROM phases ph;

\pset footer off
\echo
\echo 'Invariants (columns from "double charges" on must be 0; tests/chaos/README.md defines each)'
SELECT phase, sessions, flows, flow_errors AS "flow errors", payments,
       charges_emulator AS "charges (emulator)", charges_ledger AS "charges (ledger)",
       double_charges AS "double charges", paid_time_lost AS "paid time lost",
       ran_past AS "ran past", unpaid_time AS "unpaid time", overcharged,
       ledger_vs_stripe AS "ledger≠stripe", stuck AS "stuck payments", unsettled
FROM (SELECT * FROM result
      UNION ALL
      SELECT 'TOTAL', 1000000, sum(sessions), sum(flows), sum(flow_errors), sum(payments),
             sum(charges_emulator), sum(charges_ledger), sum(double_charges), sum(paid_time_lost),
             sum(ran_past), sum(unpaid_time), sum(overcharged), sum(ledger_vs_stripe), sum(stuck),
             sum(unsettled)
      FROM result) AS t
ORDER BY phase_no;

\echo
\echo 'What the faults did (information)'
SELECT ph.phase,
       (SELECT coalesce(sum(retried), 0) FROM obs o WHERE o.phase = ph.phase) AS "API retries",
       (SELECT coalesce(sum(unavailable), 0) FROM obs o WHERE o.phase = ph.phase) AS "502/503/504",
       (SELECT coalesce(sum(no_answer), 0) FROM obs o WHERE o.phase = ph.phase) AS "no answer",
       (SELECT coalesce(sum(not_found), 0) FROM obs o WHERE o.phase = ph.phase) AS "404 session",
       (SELECT coalesce(sum(fired), 0) FROM chaos.faults f WHERE f.phase = ph.phase)
           AS "Stripe faults fired",
       (SELECT count(*) FROM payment.stripe_requests r JOIN chaos.tenants t USING (tenant_id)
        WHERE t.phase = ph.phase) AS "Stripe calls",
       (SELECT count(*) FROM payment.stripe_requests r JOIN chaos.tenants t USING (tenant_id)
        WHERE t.phase = ph.phase AND NOT r.http_status BETWEEN 200 AND 299) AS "failed",
       (SELECT count(*) FROM chaos.deliveries d JOIN chaos.tenants t ON t.account = d.doc->>'account'
        WHERE t.phase = ph.phase) AS "webhook deliveries",
       (SELECT count(*) FROM chaos.deliveries d JOIN chaos.tenants t ON t.account = d.doc->>'account'
        WHERE t.phase = ph.phase AND d.doc->>'state' = 'failed') AS "webhooks undelivered",
       (SELECT count(*) FROM obs o WHERE o.phase = ph.phase AND o.paused_seen) AS "paused seen",
       (SELECT coalesce(max(expired_late_real_ms), 0) FROM obs o WHERE o.phase = ph.phase)
           AS "latest expiry event (real ms)"
FROM phases ph
ORDER BY ph.phase_no;

\pset format unaligned
\pset fieldsep '\t'
\pset tuples_only on
SELECT 'result', phase, col, value
FROM result,
     LATERAL (VALUES ('double charges', double_charges), ('paid time lost', paid_time_lost),
                     ('ran past', ran_past), ('unpaid time', unpaid_time),
                     ('overcharged', overcharged), ('ledger≠stripe', ledger_vs_stripe),
                     ('stuck payments', stuck), ('unsettled', unsettled)) AS v (col, value);
