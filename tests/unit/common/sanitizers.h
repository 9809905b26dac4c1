// CELLSERVE_SKIP_UNDER_ASAN(why): skips the current test in an AddressSanitizer build (gcc's
// __SANITIZE_ADDRESS__ or clang's __has_feature). For tests that limit the address space: ASan
// reserves terabytes of shadow memory, so such a limit breaks it, not the code under test.
#pragma once

#include <gtest/gtest.h>

#if defined(__SANITIZE_ADDRESS__)
#define CELLSERVE_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CELLSERVE_UNDER_ASAN 1
#endif
#endif

#ifdef CELLSERVE_UNDER_ASAN
#define CELLSERVE_SKIP_UNDER_ASAN(why) GTEST_SKIP() << "under ASan: " << (why)
#else
#define CELLSERVE_SKIP_UNDER_ASAN(why) (void)0
#endif
