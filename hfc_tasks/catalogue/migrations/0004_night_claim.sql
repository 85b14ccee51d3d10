-- 0004_night_claim: which DAG run is processing each (FRC, night).
--
-- One row per (FRC, night) while a run works on it (hfc_tasks/claims.py). Every stage of a run
-- (submit, wait, archive, catalogue) takes or checks the claim first, under SELECT ... FOR UPDATE:
-- a second run of the same night fails at once while the holder run is queued or running, so two
-- runs never submit into the same run folder, write the same archive files or cancel each
-- other's job. The catalogue stage deletes the row when it succeeds; a row left by a run that
-- failed or was marked is taken over by the next run of that night.

create table hfc.night_claim (
    frc        text not null,
    night      date not null,
    dag_id     text not null,
    run_id     text not null,
    claimed_at timestamptz not null default clock_timestamp(),
    primary key (frc, night)
);
