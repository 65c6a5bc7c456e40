/* UTF-8 checks shared by the log (which shows invalid bytes escaped), the request checks (a
 * reason must be valid UTF-8) and the JSON the coordinator writes by hand (agents' texts may
 * not be). */
#ifndef IHC_UTF8_H
#define IHC_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the valid UTF-8 sequence at s (n > 0 bytes available), 0 when s does not start
 * one (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF, cut short). */
size_t ihc_utf8_len(const unsigned char *s, size_t n);

/* Whether the len bytes at s are valid UTF-8 (NUL bytes included as U+0000). */
bool ihc_utf8_valid(const char *s, size_t len);

#endif
