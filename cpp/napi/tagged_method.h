// Instance methods that check who they are called on. node-addon-api's InstanceMethod unwraps `this` without
// checking its kind, so `SomeHandle.prototype.method.call(otherHandle)` from JavaScript would run the method on
// an object of another class and crash. These methods first check the receiver's type tag and throw a TypeError
// otherwise; only then is it unwrapped. The method runs as every entry point does (GuardEntry in errors.h).
#pragma once

#include "napi/errors.h"

#include <napi.h>

#include <string>

namespace bce {

template <typename T, const napi_type_tag* Tag, Napi::Value (T::*Method)(const Napi::CallbackInfo&)>
Napi::Value CallTagged(const Napi::CallbackInfo& info) {
  const Napi::Value self = info.This();
  if (!self.IsObject() || !self.As<Napi::Object>().CheckTypeTag(Tag)) {
    throw Napi::TypeError::New(info.Env(), "a native method was called on an object of the wrong kind");
  }
  T* object = Napi::ObjectWrap<T>::Unwrap(self.As<Napi::Object>());
  return GuardEntry(info.Env(), [&] { return (object->*Method)(info); });
}

// Defines `name` on the class's prototype. (Not through DefineClass: V8 class templates cannot hold function
// values, only templates, and InstanceMethod is the unchecked kind.)
template <typename T, const napi_type_tag* Tag, Napi::Value (T::*Method)(const Napi::CallbackInfo&)>
void AddTaggedMethod(Napi::Env env, Napi::Function constructor, const char* name) {
  constructor.Get("prototype")
      .As<Napi::Object>()
      .DefineProperty(Napi::PropertyDescriptor::Value(name, Napi::Function::New<&CallTagged<T, Tag, Method>>(env, name),
                                                      napi_default_method));
}

}  // namespace bce
