// Text: a fixed-capacity string for error messages. Building a message allocates
// nothing and needs no stdio, so the same code serves hosted and bare-metal builds
// (where the library has no heap after initialisation and no printf). Longer messages
// are truncated at kCapacity characters. Numbers are small Pieces (str(), num()), so a
// message costs one Text of stack, which matters on a microcontroller.
//   invalid("Invalid lr: " + num(g.lr) + where + "; it must be finite and >= 0");
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace cocd {
namespace detail {

// A number's text (at most 31 characters).
struct Piece {
  char text[32];
  const char* c_str() const { return text; }
};

class Text {
 public:
  static constexpr std::size_t kCapacity = 319;

  Text() { buf_[0] = '\0'; }
  Text(const char* s) : Text() { append(s); }  // NOLINT: implicit, like std::string

  Text& append(const char* s) {
    while (s != nullptr && *s != '\0' && len_ < kCapacity) buf_[len_++] = *s++;
    buf_[len_] = '\0';
    return *this;
  }
  Text& operator+=(const char* s) { return append(s); }
  Text& operator+=(const Text& t) { return append(t.c_str()); }
  const char* c_str() const { return buf_; }
  std::size_t size() const { return len_; }

  // A chain a + b + c appends into the first temporary: one buffer per chain.
  friend Text&& operator+(Text&& a, const char* b) { return std::move(a.append(b)); }
  friend Text&& operator+(Text&& a, const Text& b) { return std::move(a.append(b.c_str())); }
  friend Text&& operator+(Text&& a, const Piece& b) { return std::move(a.append(b.c_str())); }
  friend Text operator+(const Text& a, const Piece& b) { return Text(a).append(b.c_str()); }
  friend Text operator+(const Text& a, const char* b) { return Text(a).append(b); }
  friend Text operator+(const Text& a, const Text& b) { return Text(a).append(b.c_str()); }
  friend Text operator+(const char* a, const Text& b) { return Text(a).append(b.c_str()); }

 private:
  char buf_[kCapacity + 1];
  std::size_t len_ = 0;
};

inline Text operator+(const char* a, const Piece& b) { return Text(a).append(b.c_str()); }

// Decimal text of an integer (any width, either sign).
template <typename T, typename = std::enable_if_t<std::is_integral_v<T>>>
Piece str(T value) {
  char digits[24];
  int k = 0;
  const bool negative = value < 0;
  // Negate in unsigned arithmetic: also right for the most negative value.
  uint64_t u = static_cast<uint64_t>(value);
  if (negative) u = ~u + 1;
  do {
    digits[k++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0);
  Piece out;
  int j = 0;
  if (negative) out.text[j++] = '-';
  while (k > 0) out.text[j++] = digits[--k];
  out.text[j] = '\0';
  return out;
}

}  // namespace detail
}  // namespace cocd
