// A QuickFIX message store that costs no system call per message: per session one file, mapped
// into memory, holding the next sequence numbers, the creation time and an append-only log of
// the messages sent. Writes land in the page cache, so they survive the process being killed,
// as QuickFIX's own FileStore's do (it flushes its streams, it does not fsync either).
//
// File layout (little-endian):
//   0   magic "CCCXFIX1"
//   8   next sender sequence number (u64)
//   16  next target sequence number (u64)
//   24  bytes of log in use (u64)
//   32  creation time, UTC text (32 bytes, NUL-padded)
//   64  log records: u32 length, u32 reserved, u64 sequence number, the message bytes, padded to
//       8 bytes. The record's length is stored last; a zero length ends the log.
//
// A session whose store file does not exist yet takes over the sequence numbers, creation time
// and messages of QuickFIX's FileStore files under the same path, if any (the store cccx used
// before).

#include "FileStore.h"
#include "MessageStore.h"
#include "FieldConvertors.h"
#include "SessionID.h"

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr char MAGIC[8] = {'C', 'C', 'C', 'X', 'F', 'I', 'X', '1'};
constexpr std::size_t HEADER = 64;
constexpr std::size_t RECORD_HEADER = 16;
constexpr std::size_t INITIAL_SIZE = 1 << 20;

std::string errno_text(const std::string &what, const std::string &path) {
  return what + " " + path + ": " + std::strerror(errno);
}

class MmapStore : public FIX::MessageStore {
public:
  MmapStore(const FIX::UtcTimeStamp &now, const std::string &dir, const FIX::SessionID &id)
      : m_dir(dir), m_creation(now) {
    const std::string &qualifier = id.getSessionQualifier();
    m_name = id.getBeginString().getString() + "-" + id.getSenderCompID().getString() + "-"
             + id.getTargetCompID().getString() + (qualifier.empty() ? "" : "-" + qualifier);
    m_path = (dir.empty() ? std::string(".") : dir) + "/" + m_name + ".mstore";
    struct stat st;
    bool existed = ::stat(m_path.c_str(), &st) == 0;
    open(existed ? OpenMode::Existing : OpenMode::New, now);
    if (!existed) {
      take_over_file_store(now, id);
    }
  }

  ~MmapStore() override { unmap(); }

  bool set(FIX::SEQNUM seq, const std::string &msg) EXCEPT(FIX::IOException) override {
    std::size_t need = RECORD_HEADER + ((msg.size() + 7) & ~std::size_t(7));
    std::size_t end = HEADER + used();
    if (end + need + RECORD_HEADER > m_size) {
      grow(end + need + RECORD_HEADER);
    }
    char *at = m_map + end;
    std::uint64_t seq64 = seq;
    std::memcpy(at + 8, &seq64, 8);
    std::memcpy(at + RECORD_HEADER, msg.data(), msg.size());
    // The next record's length stays zero until it is written.
    std::memset(at + need, 0, 4);
    std::uint32_t len = static_cast<std::uint32_t>(msg.size());
    std::atomic_thread_fence(std::memory_order_release);
    std::memcpy(at, &len, 4);
    set_used(used() + need);
    m_index[seq] = end;
    return true;
  }

  void get(FIX::SEQNUM begin, FIX::SEQNUM end, std::vector<std::string> &out) const
      EXCEPT(FIX::IOException) override {
    out.clear();
    for (auto it = m_index.lower_bound(begin); it != m_index.end() && it->first <= end; ++it) {
      std::uint32_t len;
      std::memcpy(&len, m_map + it->second, 4);
      out.emplace_back(m_map + it->second + RECORD_HEADER, len);
    }
  }

  FIX::SEQNUM getNextSenderMsgSeqNum() const EXCEPT(FIX::IOException) override { return field(8); }
  FIX::SEQNUM getNextTargetMsgSeqNum() const EXCEPT(FIX::IOException) override { return field(16); }
  void setNextSenderMsgSeqNum(FIX::SEQNUM value) EXCEPT(FIX::IOException) override { set_field(8, value); }
  void setNextTargetMsgSeqNum(FIX::SEQNUM value) EXCEPT(FIX::IOException) override { set_field(16, value); }
  void incrNextSenderMsgSeqNum() EXCEPT(FIX::IOException) override { set_field(8, field(8) + 1); }
  void incrNextTargetMsgSeqNum() EXCEPT(FIX::IOException) override { set_field(16, field(16) + 1); }

  FIX::UtcTimeStamp getCreationTime() const EXCEPT(FIX::IOException) override { return m_creation; }

  void reset(const FIX::UtcTimeStamp &now) EXCEPT(FIX::IOException) override {
    unmap();
    m_index.clear();
    open(OpenMode::New, now);
  }

  void refresh() EXCEPT(FIX::IOException) override {
    unmap();
    m_index.clear();
    open(OpenMode::Existing, FIX::UtcTimeStamp::now());
  }

private:
  enum class OpenMode { New, Existing };

  std::uint64_t field(std::size_t at) const {
    std::uint64_t v;
    std::memcpy(&v, m_map + at, 8);
    return v;
  }
  void set_field(std::size_t at, std::uint64_t v) { std::memcpy(m_map + at, &v, 8); }
  std::uint64_t used() const { return field(24); }
  void set_used(std::uint64_t v) { set_field(24, v); }

  void open(OpenMode mode, const FIX::UtcTimeStamp &now) {
    ::mkdir(m_dir.empty() ? "." : m_dir.c_str(), 0755);
    int flags = O_RDWR | O_CREAT | (mode == OpenMode::New ? O_TRUNC : 0);
    m_fd = ::open(m_path.c_str(), flags, 0644);
    if (m_fd < 0) {
      throw FIX::IOException(errno_text("cannot open", m_path));
    }
    struct stat st;
    if (::fstat(m_fd, &st) != 0) {
      throw FIX::IOException(errno_text("cannot stat", m_path));
    }
    bool fresh = st.st_size == 0;
    if (!fresh && static_cast<std::size_t>(st.st_size) < HEADER) {
      throw FIX::IOException("truncated message store " + m_path);
    }
    map(fresh ? INITIAL_SIZE : static_cast<std::size_t>(st.st_size));
    if (fresh) {
      std::memcpy(m_map, MAGIC, 8);
      set_field(8, 1);
      set_field(16, 1);
      set_used(0);
      m_creation = now;
      std::string text = FIX::UtcTimeStampConvertor::convert(now, 9);
      std::memset(m_map + 32, 0, 32);
      std::memcpy(m_map + 32, text.data(), std::min<std::size_t>(text.size(), 31));
      return;
    }
    if (std::memcmp(m_map, MAGIC, 8) != 0) {
      throw FIX::IOException("not a cccx message store: " + m_path);
    }
    m_creation = FIX::UtcTimeStampConvertor::convert(std::string(m_map + 32, ::strnlen(m_map + 32, 32)));
    // The log up to the first record not completely written.
    std::size_t at = HEADER;
    std::size_t end = HEADER + used();
    while (at + RECORD_HEADER <= m_size) {
      std::uint32_t len;
      std::memcpy(&len, m_map + at, 4);
      if (len == 0) {
        break;
      }
      std::size_t need = RECORD_HEADER + ((std::size_t(len) + 7) & ~std::size_t(7));
      if (at + need > m_size) {
        break;
      }
      std::uint64_t seq;
      std::memcpy(&seq, m_map + at + 8, 8);
      m_index[seq] = at;
      at += need;
    }
    if (at != end) {
      // Killed between a record and the count of bytes in use: the records decide.
      set_used(at - HEADER);
    }
  }

  void map(std::size_t size) {
    if (::ftruncate(m_fd, static_cast<off_t>(size)) != 0) {
      throw FIX::IOException(errno_text("cannot size", m_path));
    }
    void *p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, m_fd, 0);
    if (p == MAP_FAILED) {
      throw FIX::IOException(errno_text("cannot map", m_path));
    }
    m_map = static_cast<char *>(p);
    m_size = size;
  }

  void grow(std::size_t need) {
    std::size_t size = m_size;
    while (size < need) {
      size *= 2;
    }
    ::munmap(m_map, m_size);
    m_map = nullptr;
    map(size);
  }

  void unmap() {
    if (m_map) {
      ::munmap(m_map, m_size);
      m_map = nullptr;
    }
    if (m_fd >= 0) {
      ::close(m_fd);
      m_fd = -1;
    }
  }

  // Sequence numbers, creation time and messages of QuickFIX FileStore files of this session.
  void take_over_file_store(const FIX::UtcTimeStamp &now, const FIX::SessionID &id) {
    std::string prefix = (m_dir.empty() ? std::string(".") : m_dir) + "/" + m_name + ".";
    struct stat st;
    if (::stat((prefix + "seqnums").c_str(), &st) != 0) {
      return;
    }
    FIX::FileStore old(now, m_dir, id);
    std::vector<std::string> messages;
    FIX::SEQNUM next = old.getNextSenderMsgSeqNum();
    if (next > 1) {
      old.get(1, next - 1, messages);
    }
    for (const std::string &msg : messages) {
      // A stored message that does not parse is left out: a resend request for it gets a gap
      // fill, rather than the session failing to start.
      try {
        FIX::Message parsed(msg, false);
        FIX::MsgSeqNum seq;
        parsed.getHeader().getField(seq);
        set(seq.getValue(), msg);
      } catch (const std::exception &) {
      }
    }
    setNextSenderMsgSeqNum(old.getNextSenderMsgSeqNum());
    setNextTargetMsgSeqNum(old.getNextTargetMsgSeqNum());
    m_creation = old.getCreationTime();
    std::string text = FIX::UtcTimeStampConvertor::convert(m_creation, 9);
    std::memset(m_map + 32, 0, 32);
    std::memcpy(m_map + 32, text.data(), std::min<std::size_t>(text.size(), 31));
  }

  std::string m_dir;
  std::string m_name;
  std::string m_path;
  FIX::UtcTimeStamp m_creation;
  int m_fd = -1;
  char *m_map = nullptr;
  std::size_t m_size = 0;
  std::map<FIX::SEQNUM, std::size_t> m_index;
};

class MmapStoreFactory : public FIX::MessageStoreFactory {
public:
  explicit MmapStoreFactory(std::string dir) : m_dir(std::move(dir)) {}
  FIX::MessageStore *create(const FIX::UtcTimeStamp &now, const FIX::SessionID &id) override {
    return new MmapStore(now, m_dir, id);
  }
  void destroy(FIX::MessageStore *store) override { delete store; }

private:
  std::string m_dir;
};

} // namespace

extern "C" {

// A store factory for the sessions of an acceptor, files under `dir`; null on failure.
FIX::MessageStoreFactory *cccx_mmap_store_factory_new(const char *dir) {
  try {
    return new MmapStoreFactory(dir ? dir : "");
  } catch (...) {
    return nullptr;
  }
}

void cccx_mmap_store_factory_delete(FIX::MessageStoreFactory *factory) { delete factory; }

// Reads back the next sender and target sequence numbers of a session's store file (tests and
// tools): 0 on success, -1 if the file cannot be read.
int cccx_mmap_store_seqnums(const char *path, std::uint64_t *sender, std::uint64_t *target) {
  int fd = ::open(path, O_RDONLY);
  if (fd < 0) {
    return -1;
  }
  char header[HEADER];
  ssize_t n = ::pread(fd, header, HEADER, 0);
  ::close(fd);
  if (n != static_cast<ssize_t>(HEADER) || std::memcmp(header, MAGIC, 8) != 0) {
    return -1;
  }
  std::memcpy(sender, header + 8, 8);
  std::memcpy(target, header + 16, 8);
  return 0;
}
}
