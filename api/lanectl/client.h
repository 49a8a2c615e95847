/* client.h — lanectl's HTTP client for lanesd's API (libcurl over the unix
 * socket). One request at a time except where a command builds its own
 * transfers from client_easy() (exec's concurrent stdin/output, cp).
 *
 * Errors are printed here, once, as "lanectl: <message>": the API's own
 * error message for HTTP errors, the socket path and a hint for connection
 * failures.
 */
#ifndef LANES_LANECTL_CLIENT_H
#define LANES_LANECTL_CLIENT_H

#include <curl/curl.h>
#include <json-c/json.h>

#include "lanectl.h"

/* A configured easy handle for METHOD path (path already URL-escaped). The
 * caller sets body/callbacks and runs it. NULL on ENOMEM. */
CURL *client_easy(lanectl_t *ctx, const char *method, const char *path);

/* Print the message for a failed transfer. */
void client_report_transport(lanectl_t *ctx, CURLcode rc, const char *errbuf);
/* Print the message of an API error body (or a generic one for status). */
void client_report_api_error(long status, const char *body, size_t len);

/* Buffered JSON call. body may be NULL (no request body). On a 2xx status
 * stores the parsed response (NULL for an empty body) in *out (may be NULL)
 * and returns 0; otherwise prints the error and returns -1. *status gets the
 * HTTP status (0 if none) when status is not NULL. */
int client_call(lanectl_t *ctx, const char *method, const char *path, json_object *body,
                json_object **out, long *status);

/* client_call that also hands back a parsed API error body in *err_out
 * (when there is one; caller puts it). */
int client_call_full(lanectl_t *ctx, const char *method, const char *path, json_object *body,
                     json_object **out, long *status, json_object **err_out);

/* Streamed NDJSON response: fn runs per parsed line as it arrives (non-zero
 * stops the transfer). Returns 0 after a complete 2xx stream, -1 on error
 * (printed). */
typedef int (*client_line_fn)(json_object *line, void *ud);
int client_stream(lanectl_t *ctx, const char *method, const char *path, json_object *body,
                  client_line_fn fn, void *ud);

/* Build "/v1/lanes/<name>/<suffix>" with name escaped ("/v1/lanes/<name>?.."
 * when suffix starts with '?'). Caller frees. */
char *client_lane_path(const char *name, const char *suffix);

#endif
