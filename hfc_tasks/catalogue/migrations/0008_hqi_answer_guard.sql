-- 0008_hqi_answer_guard: the HQI query service's bound on one answer.
--
-- The service reads a page in one round trip; its running size, summed in the database as the
-- rows are produced, stops the query there once the answer would exceed the service's bound, so
-- the service never receives more than that (hfc.hqi_row_within, 0007, bounds one row).
create function hfc.hqi_answer_within(answer_bytes bigint, max_bytes bigint) returns boolean
language plpgsql immutable parallel safe as $$
begin
    if answer_bytes > max_bytes then
        raise exception 'the answer would be larger than % bytes: ask fewer rows (LIMIT/MAXRECORDS) or fewer columns (WHAT)',
            max_bytes using errcode = '54000';
    end if;
    return true;
end
$$;
