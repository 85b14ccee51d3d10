-- 0005_batch_no_data_issues: a night without data, and a night that is not clean (issue 16).
--
-- status 'no_data': the FRC's job ran and wrote no product (its manifest has no files and
-- "no_data": true). A success, not a gap: the status page shows it as "no data", never as a
-- night to backfill. Its batch has no catalogue rows.
--
-- issues: what the archive stage noted in the manifest beside the files, one JSON object each:
--   {"issue": "unmatched", "name": <file>}  a file of the run folder that is not an HFC product
--        name, left on the cluster (the FRC's unknown_files: warn; with fail the catalogue
--        stage does not run);
--   {"issue": "stale", "name": <file>, "archive_path": ..., "slurm_job_id": <earlier job>}
--        a file an earlier job of the night produced and this job did not: kept on the archive,
--        not loaded.
-- An empty list is a clean night; anything else shows the night as "not clean".

alter table hfc.batch drop constraint batch_status_check;
alter table hfc.batch add constraint batch_status_check check (status in ('loaded', 'partial', 'no_data'));
alter table hfc.batch add column issues jsonb not null default '[]'::jsonb;
