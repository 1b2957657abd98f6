// Turns every C++ exception raised while serving a JavaScript call into a JavaScript exception, so that no
// input from JavaScript can abort the process. LibTorch's typed errors keep their meaning: an index or a value
// out of range becomes a RangeError, a type mismatch a TypeError, anything else an Error with LibTorch's message.
#pragma once

#include <napi.h>

#include "runtime/threads.h"

#include <c10/util/Exception.h>

#include <new>
#include <stdexcept>
#include <string>

namespace bce {

template <typename Fn>
auto Guard(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::IndexError& e) {
    throw Napi::RangeError::New(env, e.what_without_backtrace());
  } catch (const c10::TypeError& e) {
    throw Napi::TypeError::New(env, e.what_without_backtrace());
  } catch (const c10::ValueError& e) {
    throw Napi::RangeError::New(env, e.what_without_backtrace());
  } catch (const c10::Error& e) {
    throw Napi::Error::New(env, e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(env, "out of memory: the allocation could not be satisfied");
  } catch (const std::out_of_range& e) {
    throw Napi::RangeError::New(env, e.what());
  } catch (const std::invalid_argument& e) {
    throw Napi::TypeError::New(env, e.what());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  } catch (...) {
    throw Napi::Error::New(env, "unknown native error");
  }
}

// How every native entry point runs (free functions through Guarded, class methods through CallTagged in
// tagged_method.h): under Guard, so that a LibTorch error anywhere in it, a getter or a conversion included,
// becomes a JavaScript exception instead of aborting the process; and with the process-wide thread count applied
// to the calling thread (runtime/threads.h).
template <typename Fn>
auto GuardEntry(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  return Guard(env, [&] {
    ApplyProcessNumThreads();
    return fn();
  });
}

// A free function for Napi::Function::New: `Napi::Function::New<Guarded<Fn>>(env, name)`.
template <Napi::Value (*Fn)(const Napi::CallbackInfo&)>
Napi::Value Guarded(const Napi::CallbackInfo& info) {
  return GuardEntry(info.Env(), [&] { return Fn(info); });
}

// An argument error detected in C++ (the JS facade checks first; this is the backstop for direct callers).
[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}
[[noreturn]] inline void ThrowRange(Napi::Env env, const std::string& message) {
  throw Napi::RangeError::New(env, message);
}

}  // namespace bce
