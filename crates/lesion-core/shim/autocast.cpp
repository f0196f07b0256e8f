// libtorch's autocast state, per device type and with its dtype, for lesion_core::precision.
// tch only exposes CUDA autocast with the default dtype, so these wrap <ATen/autocast_mode.h>.
//
// Invariant: no C++ exception crosses into Rust. Every function returns 0 on success and
// LESION_SHIM_ERROR when libtorch threw; the message is then readable (until the next call on
// the same thread) through lesion_autocast_last_error().
#include <ATen/autocast_mode.h>

#include <exception>
#include <string>

namespace {
constexpr int LESION_SHIM_OK = 0;
constexpr int LESION_SHIM_ERROR = 1;

thread_local std::string last_error;

template <typename F>
int guarded(F f) {
  try {
    f();
    return LESION_SHIM_OK;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return LESION_SHIM_ERROR;
}

c10::DeviceType device_type(int d) { return static_cast<c10::DeviceType>(d); }
}  // namespace

extern "C" {

const char* lesion_autocast_last_error() { return last_error.c_str(); }

int lesion_autocast_is_enabled(int device, int* out) {
  return guarded([&] { *out = at::autocast::is_autocast_enabled(device_type(device)) ? 1 : 0; });
}

int lesion_autocast_set_enabled(int device, int enabled) {
  return guarded([&] { at::autocast::set_autocast_enabled(device_type(device), enabled != 0); });
}

// dtype: a c10::ScalarType code (Half 5, Float 6, BFloat16 15), as tch's Kind codes.
int lesion_autocast_get_dtype(int device, int* out) {
  return guarded([&] { *out = static_cast<int>(at::autocast::get_autocast_dtype(device_type(device))); });
}

int lesion_autocast_set_dtype(int device, int dtype) {
  return guarded([&] {
    at::autocast::set_autocast_dtype(device_type(device), static_cast<c10::ScalarType>(dtype));
  });
}

int lesion_autocast_increment_nesting(int* out) {
  return guarded([&] { *out = at::autocast::increment_nesting(); });
}

int lesion_autocast_decrement_nesting(int* out) {
  return guarded([&] { *out = at::autocast::decrement_nesting(); });
}

int lesion_autocast_clear_cache() {
  return guarded([] { at::autocast::clear_cache(); });
}

}  // extern "C"
