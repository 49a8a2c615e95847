/* exec_result.h — how lanectl exec turns the final NDJSON line of an exec
 * output stream into its own exit status. */
#ifndef LANES_LANECTL_EXEC_RESULT_H
#define LANES_LANECTL_EXEC_RESULT_H

#include <json-c/json.h>

/* final: {"exit":{"exit_code":int|null,"signal":int|null,"timed_out":bool}}
 * or {"error":{"code":...}} (also a plain API error body). Returns:
 * timed out → 124; killed by signal N → 128+N; exited → exit_code & 255;
 * error "command_not_found" (or "not_found") → 127; "command_not_executable"
 * (or "not_executable", "permission_denied") → 126;
 * anything else (incl. NULL) → 125. */
int exec_result_exit_code(json_object *final);

#endif
