-- set_parameters on an existing row: inside `UPDATE locaria_core.parameters` the bare name
-- `parameters` also means the table's whole row, so PostgreSQL rejected the update as ambiguous.
-- The function's argument is now named by its function (set_parameters.parameters) throughout.
CREATE OR REPLACE FUNCTION locaria_core.set_parameters(parameters JSONB) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    existing locaria_core.parameters;
    name TEXT := set_parameters.parameters->>'parameter_name';
    use TEXT := COALESCE(set_parameters.parameters->>'usage', 'SYSTEM');
BEGIN
    IF name IS NULL OR set_parameters.parameters->'parameters' IS NULL THEN
        RETURN jsonb_build_object('error', 'parameter_name and parameters are required');
    END IF;
    SELECT * INTO existing FROM locaria_core.parameters p WHERE p.parameter_name = name AND p.usage = use FOR UPDATE;
    IF FOUND THEN
        IF NOT locaria_core.acl_check(set_parameters.parameters->'acl', existing.acl, 'update') THEN
            RETURN jsonb_build_object('error', 'no update permission for parameter ' || name);
        END IF;
        UPDATE locaria_core.parameters p
           SET parameter = set_parameters.parameters->'parameters', last_updated = now(),
               acl = COALESCE(set_parameters.parameters->'parameter_acl', p.acl)
         WHERE p.id = existing.id;
    ELSE
        IF NOT (COALESCE(set_parameters.parameters->'acl'->'_groups', '[]'::jsonb) ? 'Admins') THEN
            RETURN jsonb_build_object('error', 'only Admins may create parameters');
        END IF;
        INSERT INTO locaria_core.parameters (parameter_name, usage, parameter, acl)
        VALUES (name, use, set_parameters.parameters->'parameters',
                COALESCE(set_parameters.parameters->'parameter_acl',
                         '{"update":["Admins"],"delete":["Admins"],"view":["Admins"]}'::jsonb));
    END IF;
    RETURN jsonb_build_object('parameter_name', name, 'message', 'parameter set');
END;
$$;
