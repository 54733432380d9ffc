// A QuickFIX session's socket, for what QuickFIX's API does not offer: corking it around a
// batch of messages.
//
// Corking: QuickFIX writes each message with its own `send`, and the acceptor sets TCP_NODELAY
// (`SocketNodelay=Y`, so that a lone report is never held back by Nagle's algorithm): every
// ExecutionReport was a segment of its own, and on loopback the receiver's whole input path ran
// inside each `send`. With TCP_CORK set around a batch, the kernel sends the batch as full
// segments, and the last, partial one at the uncork.
//
// QuickFIX does not expose a session's socket. Its `Session` keeps the connection (its
// `Responder`) and the lock that guards it as private members; they are reached here through
// explicit template instantiation, where access checking does not apply ([temp.spec] of the
// C++ standard), against the headers of the very QuickFIX build that is linked (`build.rs`). The acceptor is QuickFIX's multi-threaded socket
// acceptor, whose only responder type is `ThreadedSocketConnection` (its `Responder` base is
// private, so the cast is a C-style cast, which may name an inaccessible base). The session's
// own lock is held while the socket is read from the responder and used, as
// `Session::disconnect` holds it while it closes the connection and clears the responder; and
// only a logged-on session's socket is touched (the one path where QuickFIX closes a socket
// without clearing the responder first is a connection whose session has not logged on).

#include "Mutex.h"
#include "Session.h"
#include "SessionID.h"
#include "ThreadedSocketConnection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace {

template <typename Tag, typename Tag::type Member> struct Reach {
  friend typename Tag::type reach(Tag) { return Member; }
};

struct SessionResponder {
  using type = FIX::Responder *FIX::Session::*;
  friend type reach(SessionResponder);
};
template struct Reach<SessionResponder, &FIX::Session::m_pResponder>;

struct SessionMutex {
  using type = FIX::Mutex FIX::Session::*;
  friend type reach(SessionMutex);
};
template struct Reach<SessionMutex, &FIX::Session::m_mutex>;

FIX::Session *session_of(void *session) { return static_cast<FIX::Session *>(session); }

// The socket of a logged-on session, or -1; the session's lock must be held.
int socket_of(FIX::Session *session) {
  FIX::Responder *responder = session->*reach(SessionResponder());
  if (responder == nullptr || !session->isLoggedOn()) {
    return -1;
  }
  return ((FIX::ThreadedSocketConnection *)responder)->getSocket();
}

int set_cork(int fd, int on) {
  int value = on != 0 ? 1 : 0;
  return setsockopt(fd, IPPROTO_TCP, TCP_CORK, &value, sizeof value);
}

} // namespace

// The session `begin`:`sender`->`target`, or null. QuickFIX's sessions live as long as the
// acceptor that created them.
extern "C" void *cccx_fix_session(const char *begin, const char *sender, const char *target) {
  try {
    return FIX::Session::lookupSession(FIX::SessionID(begin, sender, target));
  } catch (...) {
    return nullptr;
  }
}

// Sets (`on` != 0) or clears TCP_CORK on the socket of `session` (from `cccx_fix_session`).
// Returns 0 when done, 1 when the session is not logged on (no connection to cork), -1 when
// the option could not be set.
extern "C" int cccx_fix_cork(void *session, int on) {
  FIX::Locker lock(session_of(session)->*reach(SessionMutex()));
  int fd = socket_of(session_of(session));
  if (fd < 0) {
    return 1;
  }
  return set_cork(fd, on) == 0 ? 0 : -1;
}

// Whether the socket of `session` is corked (0 or 1), and the port of its peer in
// `*peer_port`; -1 when the session is not logged on or the socket cannot be asked. For tests:
// the peer's port shows that the socket reached is the session's.
extern "C" int cccx_fix_cork_state(void *session, int *peer_port) {
  FIX::Locker lock(session_of(session)->*reach(SessionMutex()));
  int fd = socket_of(session_of(session));
  if (fd < 0) {
    return -1;
  }
  int value = 0;
  socklen_t value_len = sizeof value;
  if (getsockopt(fd, IPPROTO_TCP, TCP_CORK, &value, &value_len) != 0) {
    return -1;
  }
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr *>(&peer), &peer_len) != 0) {
    return -1;
  }
  if (peer.ss_family == AF_INET) {
    *peer_port = ntohs(reinterpret_cast<sockaddr_in *>(&peer)->sin_port);
  } else if (peer.ss_family == AF_INET6) {
    *peer_port = ntohs(reinterpret_cast<sockaddr_in6 *>(&peer)->sin6_port);
  } else {
    return -1;
  }
  return value != 0 ? 1 : 0;
}
