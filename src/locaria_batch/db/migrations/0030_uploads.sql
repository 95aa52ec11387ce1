-- Uploads without a race: the row exists as UPLOADING while the client PUTs the object, and
-- becomes REGISTERED (which queues the loader) only once the object is in storage.  Whether it
-- is there is checked by the caller (Python, or the S3 ObjectCreated handler); this side makes
-- the UPLOADING -> REGISTERED step happen once, under a row lock.

-- request_upload({file_attributes: {name, ext, file_type, ...}}) -> {id, status}
CREATE OR REPLACE FUNCTION locaria_core.request_upload(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    attrs JSONB := COALESCE(parameters->'file_attributes', '{}'::jsonb);
BEGIN
    IF COALESCE(attrs->>'name', '') = '' OR COALESCE(attrs->>'ext', '') = '' THEN
        RETURN jsonb_build_object('error', 'file_attributes.name and file_attributes.ext are required');
    END IF;
    RETURN locaria_core.add_file(jsonb_build_object(
        'status', 'UPLOADING',
        'file_attributes', jsonb_build_object('upload', true, 'path', 'incoming/', 'id_as_filename', true)
                           || attrs || jsonb_build_object('ext', lower(ltrim(attrs->>'ext', '.')))));
END;
$$;

-- complete_upload(id, attributes) -> the updated row with completed: true, or completed: false
-- (and the current status) when the file is not waiting for an upload (already completed, say).
CREATE OR REPLACE FUNCTION locaria_core.complete_upload(p_file BIGINT, p_attributes JSONB DEFAULT '{}'::jsonb)
RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    f locaria_core.files;
BEGIN
    SELECT * INTO f FROM locaria_core.files WHERE id = p_file FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('error', format('file %s does not exist', p_file));
    END IF;
    IF f.status <> 'UPLOADING' THEN
        RETURN jsonb_build_object('id', f.id, 'status', f.status, 'completed', false);
    END IF;
    RETURN locaria_core.update_file(jsonb_build_object(
               'id', p_file, 'status', 'REGISTERED', 'message', 'Upload complete',
               'attributes', COALESCE(p_attributes, '{}'::jsonb)))
           || jsonb_build_object('completed', true);
END;
$$;
