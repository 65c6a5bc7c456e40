# Install-time script (install(SCRIPT) from deploy/CMakeLists.txt): writes the systemd units
# with ExecStart naming the programs under the prefix actually installed to.

if(IS_ABSOLUTE "${IHC_UNIT_BINDIR}")
  set(_bindir "${IHC_UNIT_BINDIR}")
else()
  set(_bindir "${CMAKE_INSTALL_PREFIX}/${IHC_UNIT_BINDIR}")
endif()
if(IS_ABSOLUTE "${IHC_UNIT_DIR}")
  set(_unitdir "${IHC_UNIT_DIR}")
else()
  set(_unitdir "${CMAKE_INSTALL_PREFIX}/${IHC_UNIT_DIR}")
endif()

foreach(_unit ihc-coordinator.service ihc-agent.service)
  file(READ "${IHC_UNIT_SRC}/${_unit}" _text)
  string(REPLACE "ExecStart=/usr/local/bin/" "ExecStart=${_bindir}/" _text "${_text}")
  string(FIND "${_text}" "ExecStart=${_bindir}/" _at)
  if(_at EQUAL -1)
    message(FATAL_ERROR "${_unit}: no ExecStart=/usr/local/bin/ line to rewrite")
  endif()
  file(WRITE "${IHC_UNIT_BUILD}/${_unit}" "${_text}")
  file(INSTALL DESTINATION "${_unitdir}" TYPE FILE FILES "${IHC_UNIT_BUILD}/${_unit}")
endforeach()
