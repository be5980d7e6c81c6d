"""Build `relay.srt._libsrt`: the cffi binding to libsrt (API mode, compiled out of line).

setup.py names this file in `cffi_modules`, so `pip install -e .` and `setup.py build_ext`
compile it beside the Cython extensions. It needs Debian's `libsrt-openssl-dev` (headers in
/usr/include/srt, `-lsrt`); at run time the module loads `libsrt.so.1.5` from
`libsrt1.5-openssl`.

The declarations below are the part of srt.h (libsrt 1.5) that a listener needs. API mode
means the C compiler checks each of them against the real header, and the `...` in enums
and structs lets the header give the values and the layout (SRT_TRACEBSTATS grew fields in
1.5.0; only the ones named here are read).
"""

from __future__ import annotations

from cffi import FFI

CDEF = r"""
typedef int32_t SRTSOCKET;
typedef int SYSSOCKET;

struct sockaddr { ...; };
struct sockaddr_storage { ...; };

typedef enum SRT_SOCKSTATUS {
    SRTS_INIT, SRTS_OPENED, SRTS_LISTENING, SRTS_CONNECTING, SRTS_CONNECTED, SRTS_BROKEN,
    SRTS_CLOSING, SRTS_CLOSED, SRTS_NONEXIST, ...
} SRT_SOCKSTATUS;

typedef enum SRT_SOCKOPT {
    SRTO_RCVSYN, SRTO_SNDSYN, SRTO_RCVBUF, SRTO_UDP_RCVBUF, SRTO_LATENCY, SRTO_RCVLATENCY,
    SRTO_PEERLATENCY, SRTO_PASSPHRASE, SRTO_PBKEYLEN, SRTO_KMSTATE, SRTO_STREAMID,
    SRTO_MESSAGEAPI, SRTO_PAYLOADSIZE, SRTO_TRANSTYPE, SRTO_PEERIDLETIMEO, SRTO_TSBPDMODE,
    SRTO_TLPKTDROP, SRTO_ENFORCEDENCRYPTION, SRTO_IPV6ONLY, SRTO_REUSEADDR, SRTO_CONNTIMEO,
    SRTO_FC, SRTO_PEERVERSION, ...
} SRT_SOCKOPT;

typedef enum SRT_TRANSTYPE { SRTT_LIVE, SRTT_FILE, SRTT_INVALID, ... } SRT_TRANSTYPE;

typedef enum SRT_ERRNO {
    SRT_EUNKNOWN, SRT_SUCCESS, SRT_ECONNREJ, SRT_ESECFAIL, SRT_ECONNLOST, SRT_ENOCONN,
    SRT_EINVSOCK, SRT_EINVPARAM, SRT_EASYNCRCV, SRT_ETIMEOUT, SRT_ELARGEMSG, SRT_EINVPOLLID,
    SRT_EPOLLEMPTY, SRT_EBINDCONFLICT, SRT_EDUPLISTEN, ...
} SRT_ERRNO;

enum SRT_REJECT_REASON { SRT_REJ_UNKNOWN, SRT_REJ_PEER, SRT_REJ_BADSECRET, SRT_REJ_UNSECURE,
                         SRT_REJ_TIMEOUT, SRT_REJ_CLOSE, ... };
#define SRT_REJC_INTERNAL ...
#define SRT_REJC_PREDEFINED ...
#define SRT_REJC_USERDEFINED ...

enum SRT_EPOLL_OPT { SRT_EPOLL_IN, SRT_EPOLL_OUT, SRT_EPOLL_ERR, ... };
enum SRT_EPOLL_FLAGS { SRT_EPOLL_ENABLE_EMPTY, SRT_EPOLL_ENABLE_OUTPUTCHECK, ... };

typedef struct SRT_EPOLL_EVENT_STR {
    SRTSOCKET fd;
    int events;
} SRT_EPOLL_EVENT;

typedef struct CBytePerfMon {
    int64_t msTimeStamp;
    int64_t pktRecvTotal;
    int pktRcvLossTotal;
    int pktRcvDropTotal;
    int pktRcvUndecryptTotal;
    uint64_t byteRecvTotal;
    uint64_t byteRcvLossTotal;
    uint64_t byteRcvDropTotal;
    int64_t pktRecv;
    int pktRcvLoss;
    int pktRcvRetrans;
    int pktRcvDrop;
    int64_t pktRcvBelated;
    double mbpsRecvRate;
    double msRTT;
    double mbpsBandwidth;
    int byteAvailRcvBuf;
    int pktRcvBuf;
    int byteRcvBuf;
    int msRcvBuf;
    int msRcvTsbPdDelay;
    int64_t pktRecvUniqueTotal;
    uint64_t byteRecvUniqueTotal;
    ...;
} SRT_TRACEBSTATS;

static const SRTSOCKET SRT_INVALID_SOCK;
static const int SRT_ERROR;
static const int SRT_LIVE_DEF_PLSIZE;
static const int SRT_LIVE_MAX_PLSIZE;
static const int SRT_LIVE_DEF_LATENCY_MS;

int srt_startup(void);
int srt_cleanup(void);
uint32_t srt_getversion(void);

SRTSOCKET srt_create_socket(void);
int srt_bind(SRTSOCKET u, const struct sockaddr *name, int namelen);
/* --workers: bind to a UDP socket made with SO_REUSEPORT (libsrt has no such option). */
int srt_bind_acquire(SRTSOCKET u, SYSSOCKET udpsock);
int srt_listen(SRTSOCKET u, int backlog);
int srt_connect(SRTSOCKET u, const struct sockaddr *name, int namelen);  /* tests' caller */
SRTSOCKET srt_accept(SRTSOCKET u, struct sockaddr *addr, int *addrlen);
typedef int srt_listen_callback_fn(void *opaq, SRTSOCKET ns, int hsversion,
                                   const struct sockaddr *peeraddr, const char *streamid);
int srt_listen_callback(SRTSOCKET lsn, srt_listen_callback_fn *hook_fn, void *hook_opaque);
int srt_close(SRTSOCKET u);
int srt_getsockname(SRTSOCKET u, struct sockaddr *name, int *namelen);
int srt_getpeername(SRTSOCKET u, struct sockaddr *name, int *namelen);
int srt_getsockflag(SRTSOCKET u, SRT_SOCKOPT opt, void *optval, int *optlen);
int srt_setsockflag(SRTSOCKET u, SRT_SOCKOPT opt, const void *optval, int optlen);
SRT_SOCKSTATUS srt_getsockstate(SRTSOCKET u);

int srt_recvmsg(SRTSOCKET u, char *buf, int len);

int srt_getrejectreason(SRTSOCKET sock);
int srt_setrejectreason(SRTSOCKET sock, int value);
const char *srt_rejectreason_str(int id);

const char *srt_getlasterror_str(void);
int srt_getlasterror(int *errno_loc);
const char *srt_strerror(int code, int errnoval);
void srt_clearlasterror(void);

int srt_bstats(SRTSOCKET u, SRT_TRACEBSTATS *perf, int clear);

int srt_epoll_create(void);
int srt_epoll_add_usock(int eid, SRTSOCKET u, const int *events);
int srt_epoll_remove_usock(int eid, SRTSOCKET u);
int srt_epoll_uwait(int eid, SRT_EPOLL_EVENT *fdsSet, int fdsSize, int64_t msTimeOut);
int32_t srt_epoll_set(int eid, int32_t flags);
int srt_epoll_release(int eid);

void srt_setloglevel(int ll);

/* Socket addresses, converted here so Python only sees (family, packed address, port). */
int relay_sockaddr_make(int family, const unsigned char *packed, int port,
                        struct sockaddr_storage *out);
int relay_sockaddr_split(const struct sockaddr *sa, unsigned char *packed16, int *port);

/* The listen callback (relay/srt/binding.py): libsrt calls it on its receive thread. */
extern "Python" int relay_srt_listen_hook(void *opaque, SRTSOCKET ns, int hsversion,
                                          const struct sockaddr *peeraddr,
                                          const char *streamid);
"""

SOURCE = r"""
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <srt/srt.h>

/* Fill `out` with an AF_INET (4-byte `packed`) or AF_INET6 (16-byte) address; its length,
   or -1 for another family. */
static int relay_sockaddr_make(int family, const unsigned char *packed, int port,
                               struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((unsigned short)port);
        memcpy(&sin->sin_addr, packed, 4);
        return (int)sizeof(*sin);
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)port);
        memcpy(&sin6->sin6_addr, packed, 16);
        return (int)sizeof(*sin6);
    }
    return -1;
}

/* The family of `sa` (its packed address into `packed16`, its port into `port`), or -1. */
static int relay_sockaddr_split(const struct sockaddr *sa, unsigned char *packed16, int *port)
{
    if (sa == NULL)
        return -1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        memcpy(packed16, &sin->sin_addr, 4);
        *port = ntohs(sin->sin_port);
        return AF_INET;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        memcpy(packed16, &sin6->sin6_addr, 16);
        *port = ntohs(sin6->sin6_port);
        return AF_INET6;
    }
    return -1;
}
"""

ffi = FFI()
ffi.cdef(CDEF)
ffi.set_source("relay.srt._libsrt", SOURCE, libraries=["srt"], extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffi.compile(verbose=True)
