-- file_download: the leaves of a JSON document, so nested search-data attributes can be
-- exported as flat, typed columns ("address.street").  A number is 'integer' when it has no
-- fraction and fits a bigint exactly as a double would (15 digits), else 'number'.
CREATE OR REPLACE FUNCTION locaria_core.jsonb_leaves(doc JSONB)
RETURNS TABLE (path TEXT[], kind TEXT)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH RECURSIVE walk (path, value) AS (
        SELECT ARRAY[e.key], e.value
          FROM jsonb_each(CASE WHEN jsonb_typeof(doc) = 'object' THEN doc ELSE '{}'::jsonb END) e
        UNION ALL
        SELECT w.path || e.key, e.value
          FROM walk w, jsonb_each(w.value) e
         WHERE jsonb_typeof(w.value) = 'object'
    )
    SELECT w.path,
           CASE jsonb_typeof(w.value)
               WHEN 'number' THEN CASE WHEN w.value::text ~ '^-?[0-9]{1,15}$' THEN 'integer' ELSE 'number' END
               ELSE jsonb_typeof(w.value)
           END
      FROM walk w
     WHERE jsonb_typeof(w.value) <> 'object'
$$;

-- Finished downloads by age, for `locaria-batch downloads prune`.
CREATE INDEX IF NOT EXISTS files_downloads_idx ON locaria_core.files (last_update)
    WHERE attributes @> '{"download": true}';
