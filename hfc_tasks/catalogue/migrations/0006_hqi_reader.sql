-- 0006_hqi_reader: the group role of the HQI query service's readers (issue 12).
--
-- hfc_hqi_reader (NOLOGIN) may read what the HQI serves and nothing else: USAGE on schema hfc,
-- SELECT on hfc.frc_info and on every view hfc.view_*_hqi / hfc.view_*_gui (the served names of
-- hfc_tasks/hqi/tables.py: SERVED). Not the feature tables, not the pipeline's tables (batch,
-- night_claim, schema_migrations...). The service logs in as a member of it (hfc_hqi, read-only
-- by default, with a statement timeout), made by `hfc db upgrade`
-- (hfc_tasks/catalogue/readers_role.py), which also grants again on every upgrade so that a
-- served view added later is covered.
--
-- Roles belong to the whole server, and several catalogue databases may share one (the tests
-- make many): the role is created only when missing, and a concurrent creation by another
-- database's upgrade is not an error. A role that may not create roles (the pipeline's own,
-- whose loads apply the migrations) skips the creation with a notice: the grants follow when
-- `hfc db upgrade` runs as a role that may.

do $$
declare
    rel record;
begin
    if not exists (select from pg_roles where rolname = 'hfc_hqi_reader') then
        if not exists (select from pg_roles where rolname = current_user and (rolsuper or rolcreaterole)) then
            raise notice 'role hfc_hqi_reader does not exist and % may not create roles: '
                'run `hfc db upgrade` as a role with CREATEROLE to make the HQI reader roles', current_user;
            return;
        end if;
        begin
            create role hfc_hqi_reader nologin;
        exception when duplicate_object or unique_violation then
            null;  -- another database's upgrade made it meanwhile
        end;
    end if;
    grant usage on schema hfc to hfc_hqi_reader;
    for rel in
        select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'hfc' and c.relkind in ('r', 'v', 'm', 'p', 'f')
          and c.relname ~ '^(frc_info|view_[a-z0-9]+_(hqi|gui))$'
        order by 1
    loop
        execute format('grant select on hfc.%I to hfc_hqi_reader', rel.relname);
    end loop;
end
$$;
