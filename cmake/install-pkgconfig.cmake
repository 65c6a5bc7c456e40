# Install-time script (from ihc_install_pkgconfig, cmake/IhcInstall.cmake): writes a .pc file
# whose prefix is the one installed to (`--prefix P`, else the configured one).
# DESTDIR stays out of it, as with autotools: the .pc names where the files will live; to
# build against a staged tree, set PKG_CONFIG_SYSROOT_DIR=$DESTDIR.

set(IHC_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(_dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${IHC_PC_${_dir}_REL}")
    set(IHC_PC_${_dir} "${IHC_PC_${_dir}_REL}")
    set(_abs_${_dir} "${IHC_PC_${_dir}_REL}")
  else()
    set(IHC_PC_${_dir} "\${prefix}/${IHC_PC_${_dir}_REL}")
    set(_abs_${_dir} "${CMAKE_INSTALL_PREFIX}/${IHC_PC_${_dir}_REL}")
  endif()
endforeach()

configure_file("${IHC_PC_TEMPLATE}" "${IHC_PC_OUT}" @ONLY)
# file(INSTALL) adds DESTDIR and records the file in install_manifest.txt.
file(INSTALL DESTINATION "${_abs_LIBDIR}/pkgconfig" TYPE FILE FILES "${IHC_PC_OUT}")
