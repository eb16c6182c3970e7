/* version.h: the release version and the newest protocol version this build speaks. */
#ifndef ET_VERSION_H
#define ET_VERSION_H

#include "et/frame.h"

#define ET_VERSION          "0.1.0"
#define ET_VERSION_PROTOCOL ET_PROTO_VERSION_MAX

#endif
